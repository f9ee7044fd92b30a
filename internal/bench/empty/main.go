// Command empty does nothing: scripts/bench.sh times its start to show the
// floor under which no Go client process can knock on this machine.
package main

func main() {}
