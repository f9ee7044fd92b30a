package client_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"

	"sknock/knock"
	"sknock/knock/client"
	"sknock/packet"
	"sknock/pki"
)

// Knock a UDP port on a "gatekeeper" that is a loopback UDP listener, and
// show what the server decodes from the datagram.
func Example() {
	// A throwaway CA with a server bundle and a client bundle allowed
	// udp/8000 (normally made once with 'sknock pki').
	dir, err := os.MkdirTemp("", "sknock-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	const password = "portknocking"
	allow, _ := pki.ParseAllow("udp/8000")
	if err := pki.InitCA(dir, pki.DefaultCADays); err != nil {
		log.Fatal(err)
	}
	if err := pki.IssueServer(dir, "gatekeeper", password, pki.IssueOptions{}); err != nil {
		log.Fatal(err)
	}
	if err := pki.IssueClient(dir, "alice", allow, password, pki.IssueOptions{}); err != nil {
		log.Fatal(err)
	}

	// The "gatekeeper": a UDP socket on loopback.
	server, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	knockPort := uint16(server.LocalAddr().(*net.UDPAddr).Port)

	// The client: load once, knock as often as needed.
	c, err := client.Load(filepath.Join(dir, "alice.pfx"), password, filepath.Join(dir, "gatekeeper.pem"),
		&client.Config{KnockPort: knockPort})
	if err != nil {
		log.Fatal(err)
	}
	results, err := c.Knock(context.Background(), "127.0.0.1", client.Request{Proto: packet.UDP, Port: 8000})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(results[0].Request, results[0].Status)

	// The server side: open the datagram with the server's key.
	buf := make([]byte, 2048)
	n, _, err := server.ReadFromUDP(buf)
	if err != nil {
		log.Fatal(err)
	}
	bundle, err := pki.LoadBundle(filepath.Join(dir, "gatekeeper.pfx"), password)
	if err != nil {
		log.Fatal(err)
	}
	key, err := bundle.ECDHKey()
	if err != nil {
		log.Fatal(err)
	}
	opener, err := knock.NewOpener(bundle.Cert.RawSubjectPublicKeyInfo, key)
	if err != nil {
		log.Fatal(err)
	}
	k, err := opener.OpenV2(buf[:n])
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("server decoded %s/%d for %s\n", k.Requests[0].Proto, k.Requests[0].Port, k.ClientIP)
	// Output:
	// udp/8000 knocked
	// server decoded udp/8000 for 127.0.0.1
}
