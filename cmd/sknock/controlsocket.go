package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"go.yaml.in/yaml/v3"

	"sknock/internal/control"
)

// defaultDaemonConfig is where `sknock grants|status|reload` look for
// sknockd's configuration (its control.socket) when no --config or
// --socket is given.
const defaultDaemonConfig = "/etc/sknock/config.yaml"

const controlFlagsHelp = `  --socket PATH   the control socket; default: control.socket in --config
  --config FILE   sknockd's configuration, for its control.socket (default
                  ` + defaultDaemonConfig + ` when readable, else the socket
                  ` + control.DefaultSocket + `)`

// controlFlags are the flags that say where sknockd's control socket is.
type controlFlags struct {
	socket, config string
}

func (c *controlFlags) register(flags *flag.FlagSet) {
	flags.StringVar(&c.socket, "socket", "", "sknockd's control socket (default: control.socket in --config)")
	flags.StringVar(&c.config, "config", "", "sknockd's configuration, for its control.socket (default "+defaultDaemonConfig+" when readable)")
}

// target returns the socket to use and how it was found, for errors:
// --socket; else control.socket in --config (which must be readable);
// else in the default configuration when that is readable; else the
// default socket.
func (c *controlFlags) target() (socket, how string, err error) {
	if c.socket != "" {
		return c.socket, "--socket", nil
	}
	config, explicit := c.config, c.config != ""
	if !explicit {
		config = defaultDaemonConfig
	}
	socket, err = socketFromConfig(config)
	switch {
	case err == nil:
		return socket, "control.socket in " + config, nil
	case explicit:
		return "", "", err
	case errors.Is(err, fs.ErrNotExist):
		return control.DefaultSocket, "the default; no " + config, nil
	}
	return control.DefaultSocket, fmt.Sprintf("the default; %v", err), nil
}

// socketFromConfig reads control.socket from sknockd's configuration
// file; only that key is read (sknockd checks the rest).
func socketFromConfig(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--config: %w", err)
	}
	var cfg struct {
		Control struct {
			Socket string `yaml:"socket"`
		} `yaml:"control"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return "", fmt.Errorf("--config %s: %w", path, err)
	}
	if cfg.Control.Socket == "" {
		return control.DefaultSocket, nil
	}
	return cfg.Control.Socket, nil
}

// call sends req to the socket the flags name; an error says which
// socket was tried and why it was that one.
func (c *controlFlags) call(req control.Request, timeout time.Duration) (control.Response, error) {
	socket, how, err := c.target()
	if err != nil {
		return control.Response{}, err
	}
	resp, err := control.Call(socket, req, timeout)
	if err != nil && !errors.Is(err, control.ErrRefused) {
		err = fmt.Errorf("%w [socket from %s]", err, how)
	}
	return resp, err
}

// parseControlCommand parses the flags of a control command that takes
// no arguments (status, reload): where the socket is, and --json. code is
// the exit status when the command should end now (help, bad flags), -1
// otherwise.
func parseControlCommand(name, usage string, args []string, stdout, stderr io.Writer) (target controlFlags, asJSON bool, code int) {
	flags := flag.NewFlagSet(name, flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() { fmt.Fprint(helpOut(args, stdout, stderr), usage) }
	target.register(flags)
	flags.BoolVar(&asJSON, "json", false, "print JSON")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return target, asJSON, 0
		}
		return target, asJSON, 2
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "sknock %s: unexpected argument %q\n", name, flags.Arg(0))
		return target, asJSON, 2
	}
	return target, asJSON, -1
}
