package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"sknock/internal/control"
)

const reloadUsage = `usage: sknock reload [--socket PATH | --config FILE] [--json]

Make the running sknockd read its configuration file again, now, and
wait for the verdict (root only): print the keys that changed, or exit 1
with the error that refused the file (the key, or the line of a syntax
error), the same words as sknockd's log. A refused file changes nothing.
systemctl reload sknockd runs this.

` + controlFlagsHelp + `
  --json          print the answer as JSON

Exit status: 0 applied, 1 refused or sknockd unreachable, 2 bad flags.
`

func runReload(args []string, stdout, stderr io.Writer) int {
	target, asJSON, code := parseControlCommand("reload", reloadUsage, args, stdout, stderr)
	if code >= 0 {
		return code
	}
	resp, err := target.call(control.Request{Command: control.CommandReload}, control.ReloadTimeout)
	if err == nil && resp.Reload == nil {
		err = errors.New("sknockd sent no answer to the reload (is it older than this sknock?)")
	}
	if err != nil {
		fmt.Fprintf(stderr, "sknock reload: %v\n", err)
		return 1
	}
	if asJSON {
		return printJSON(stdout, stderr, resp.Reload)
	}
	fmt.Fprintf(stdout, "configuration reloaded; changed: %s\n", changedList(resp.Reload.Changed))
	return 0
}

// changedList is a reload's changed keys for a person.
func changedList(keys []string) string {
	if len(keys) == 0 {
		return "nothing"
	}
	return strings.Join(keys, ", ")
}
