package pki_test

import (
	"fmt"

	"sknock/packet"
	"sknock/pki"
)

func ExampleParseAllow() {
	a, err := pki.ParseAllow("tcp/2000,tcp/3000,udp/8000")
	if err != nil {
		panic(err)
	}
	fmt.Println(a.String())
	fmt.Println(a.CLIString())
	fmt.Println(a.Allows(packet.UDP, 8000), a.Allows(packet.UDP, 2000))
	// Output:
	// 1.2000,1.3000,0.8000
	// tcp/2000,tcp/3000,udp/8000
	// true false
}
