// Command sknock is the sknock client and toolbox: it knocks (`knock`,
// also as an ssh ProxyCommand with `--connect`), explains a captured knock
// (`inspect`), and runs a small certificate authority (`pki`).
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

const usage = `sknock — client and tools for the sknock gatekeeper

Usage:
  sknock knock [flags] HOST PROTO/PORT...   open ports on HOST with one signed knock each
  sknock inspect [flags] PACKETFILE         decide a captured knock as the gatekeeper would
  sknock pki init|server|client|revoke|crl  a small file-based certificate authority
  sknock grants list|revoke [flags]         see and end the running sknockd's grants (root)
  sknock status [--json]                    the running sknockd's state and counters (root)
  sknock reload                             make sknockd read its configuration again, and wait (root)
  sknock --version

Examples:
  sknock knock --pkcs12 me.pfx --server-cert server.pem gate.example.net tcp/22
  ssh -o ProxyCommand='sknock knock --connect --pkcs12 me.pfx --server-cert server.pem %h tcp/%p' gate.example.net
  sknock inspect --pkcs12 server.pfx --crl ca.crl --source 198.18.0.2 knock.bin
  sknock pki client --dir ca --name alice --allow tcp/22,udp/8000

Run "sknock COMMAND --help" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		io.WriteString(stderr, usage)
		return 2
	}
	switch args[0] {
	case "knock":
		return runKnock(args[1:], stdin, stdout, stderr)
	case "inspect":
		return runInspect(args[1:], stdout, stderr)
	case "pki":
		return runPKI(args[1:], stdout, stderr)
	case "grants":
		return runGrants(args[1:], stdout, stderr)
	case "status":
		return runStatus(args[1:], stdout, stderr)
	case "reload":
		return runReload(args[1:], stdout, stderr)
	case "--version", "-version", "version":
		fmt.Fprintln(stdout, "sknock", version)
		return 0
	case "-h", "--help", "-help", "help":
		io.WriteString(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "sknock: unknown command %q (see sknock --help)\n", args[0])
	return 2
}
