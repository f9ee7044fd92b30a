// Command sknockd is the sknock gatekeeper: it installs the static
// iptables rules, serves the gate and knock NFQUEUEs, and opens a protected
// port for a source only after a valid certificate-signed knock.
//
//	sknockd --config /etc/sknock/config.yaml                 run in the foreground
//	sknockd --config /etc/sknock/config.yaml --check         validate and exit
//	sknockd --config /etc/sknock/config.yaml --apply-rules   the boot step: rules only
//	sknockd --config /etc/sknock/config.yaml --remove-rules  uncover the ports
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
	"time"

	"sknock/internal/config"
	"sknock/internal/daemon"
	"sknock/internal/journal"
	"sknock/rules"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

const usage = `sknockd — the sknock gatekeeper (run as root)

Usage:
  sknockd --config FILE            run: bind both queues, apply the rules,
                                   serve; keep the rules in place and
                                   restore them within 2 s if another tool
                                   changes them; apply the whole config
                                   again on SIGHUP; log the counters on
                                   SIGUSR1; on SIGTERM/SIGINT stop and
                                   LEAVE the rules: protected ports stay
                                   closed until sknockd runs again
  sknockd --config FILE --check    validate the config and every file it names, then exit
  sknockd --config FILE --apply-rules
                                   apply the rules only and exit (the boot
                                   step: protected ports closed, knocks
                                   unanswered, until sknockd serves them)
  sknockd --config FILE --remove-rules
                                   remove the rules and exit: the protected
                                   ports become reachable without a grant
                                   (refused while sknockd runs)
  sknockd --config FILE --rules-script apply|remove
                                   print the iptables commands of the rule set
  sknockd --version

Example:
  sudo sknockd --config /etc/sknock/config.yaml

Exit status: 0 clean stop (rules kept) or done; 2 bad flags or
configuration (nothing applied); 1 a runtime failure, or another sknockd
already runs in this network namespace: rules that were in place stay, so
protected ports stay closed.
`

// system is the daemon's real OS boundaries, with this build's version.
func system() daemon.OSDeps {
	sys := daemon.System
	sys.Version = version
	return sys
}

func main() {
	// Under systemd each stderr line carries its journald priority.
	os.Exit(run(os.Args[1:], os.Stdout, journal.Stderr()))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sknockd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(helpOutput(args, stdout, stderr), usage) }
	configPath := fs.String("config", "", "configuration file (YAML)")
	check := fs.Bool("check", false, "validate the configuration and exit")
	rulesScript := fs.String("rules-script", "", "print the rule set as shell commands for `apply` or `remove`")
	applyRules := fs.Bool("apply-rules", false, "apply the rules only and exit (the boot step)")
	removeRules := fs.Bool("remove-rules", false, "remove the rules and exit, uncovering the protected ports")
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
	cfg, err := config.LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %v\n", err)
		return 2
	}
	if modes := countTrue(*check, *applyRules, *removeRules, *rulesScript != ""); modes > 1 {
		fmt.Fprintln(stderr, "sknockd: --check, --apply-rules, --remove-rules and --rules-script exclude each other (see --help)")
		return 2
	}
	if *applyRules || *removeRules {
		return daemon.RulesOnly(&cfg, *removeRules, stdout, stderr, system())
	}
	if *rulesScript != "" {
		// As the daemon's keeper decides: the reject label's rules are
		// there when this host forwards (rules.Config.Labels).
		cfg.Rules.Forwarding = rules.HostForwards()
		script, err := cfg.Rules.Script(*rulesScript)
		if err != nil {
			fmt.Fprintf(stderr, "sknockd: --rules-script: %v\n", err)
			return 2
		}
		fmt.Fprint(stdout, script)
		return 0
	}
	if *check {
		return daemon.Check(&cfg, stdout, stderr, time.Now())
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(hup)
	return daemon.Serve(ctx, &cfg, hup, stderr, system())
}

// countTrue counts the true values.
func countTrue(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
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
