package main

import (
	"fmt"
	"io"
)

// runKnock is replaced by the client implementation.
func runKnock(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "sknock knock: not implemented yet")
	return 1
}
