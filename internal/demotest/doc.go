// Package demotest tests the project's delivery files rather than Go code:
// scripts/demo.sh (the "run it" command, run for real as root in network
// namespaces, to completion and interrupted), scripts/sknockd.service
// (checked by systemd-analyze when it is installed) and the Makefile's
// install and uninstall targets (into a DESTDIR).
package demotest
