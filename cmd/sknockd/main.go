// Command sknockd is the sknock gatekeeper: it installs the static
// iptables rules, serves the gate and knock NFQUEUEs, and opens a protected
// port for a source only after a valid certificate-signed knock.
//
//	sknockd --config /etc/sknock/config.yaml          run in the foreground
//	sknockd --config /etc/sknock/config.yaml --check  validate and exit
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

const usage = `sknockd — the sknock gatekeeper (run as root)

Usage:
  sknockd --config FILE            run: apply the rules, serve both queues,
                                   remove the rules on SIGTERM/SIGINT,
                                   reload CRL and trust on SIGHUP,
                                   log the counters now on SIGUSR1
  sknockd --config FILE --check    validate the config and every file it names, then exit
  sknockd --config FILE --rules-script apply|remove
                                   print the iptables commands of the rule set
  sknockd --version

Example:
  sudo sknockd --config /etc/sknock/config.yaml

Exit status: 0 clean stop (rules removed) or valid config; 2 bad flags or
configuration (nothing applied); 1 a runtime failure: if the rules were
applied they stay, so protected ports stay closed until sknockd is back.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sknockd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(helpOutput(args, stdout, stderr), usage) }
	configPath := fs.String("config", "", "configuration file (YAML)")
	check := fs.Bool("check", false, "validate the configuration and exit")
	rulesScript := fs.String("rules-script", "", "print the rule set as shell commands for `apply` or `remove`")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "sknockd", version)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sknockd: unexpected argument %q (see --help)\n", fs.Arg(0))
		return 2
	}
	if *configPath == "" {
		fmt.Fprintln(stderr, "sknockd: --config FILE is required (see --help)")
		return 2
	}
	cfg, err := LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %v\n", err)
		return 2
	}
	if *rulesScript != "" {
		script, err := cfg.Rules.Script(*rulesScript)
		if err != nil {
			fmt.Fprintf(stderr, "sknockd: --rules-script: %v\n", err)
			return 2
		}
		fmt.Fprint(stdout, script)
		return 0
	}
	if *check {
		_, info, warnings, err := loadTrust(context.Background(), &cfg, nil)
		if err != nil {
			fmt.Fprintf(stderr, "sknockd: %s: %v\n", cfg.Path, err)
			return 2
		}
		for _, w := range warnings {
			fmt.Fprintf(stderr, "sknockd: warning: %v\n", w)
		}
		if info.CRLStale {
			fmt.Fprintf(stderr, "sknockd: warning: crl.file %s is past its next update (%s); its revocations still apply\n", cfg.CRLFile, info.CRLNext.UTC().Format("2006-01-02T15:04:05Z"))
		}
		fmt.Fprintf(stdout, "sknockd: %s is valid: server %s, %d CA(s), %d revoked serial(s), protecting %s with policy %s\n",
			cfg.Path, info.Server, len(info.CAs), info.CRLSerials, protectList(&cfg), cfg.Policy)
		return 0
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(hup)
	return serve(ctx, &cfg, hup, stderr)
}

func protectList(c *Config) string {
	if len(c.Rules.Protect) == 0 {
		return "nothing"
	}
	s := ""
	for i, p := range c.Rules.Protect {
		if i > 0 {
			s += ","
		}
		s += p.String()
	}
	return s
}

// helpOutput is where usage goes: stdout when it was asked for with -h or
// --help (so it pages), stderr when it explains a bad flag.
func helpOutput(args []string, stdout, stderr io.Writer) io.Writer {
	for _, a := range args {
		switch a {
		case "-h", "-help", "--help":
			return stdout
		}
	}
	return stderr
}
