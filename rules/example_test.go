package rules_test

import (
	"fmt"
	"strings"

	"sknock/rules"
)

func ExampleConfig_Rules() {
	c := rules.DefaultConfig()
	p, err := rules.ParsePortSpec("tcp/2000")
	if err != nil {
		fmt.Println(err)
		return
	}
	c.Protect = []rules.PortSpec{p}
	// A host that forwards (a router, containers): a forwarded connection
	// is revoked by the reject label, so the label's rules are there.
	c.Forwarding = true
	if err := c.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	// The gate, in mangle, before any DNAT.
	fmt.Println("*mangle")
	for _, rule := range c.Rules(false) {
		fmt.Println("-A", c.Chain, strings.Join(rule, " "))
	}
	for _, rule := range c.SynRules() {
		fmt.Println("-A", c.SynChain(), strings.Join(rule, " "))
	}
	for _, rule := range c.GrantRules() {
		fmt.Println("-A", c.GrantChain(), strings.Join(rule, " "))
	}
	for _, rule := range c.RejectMarkRules() {
		fmt.Println("-A", c.RejectChain(), strings.Join(rule, " "))
	}
	fmt.Println("-I PREROUTING 1", strings.Join(c.Jump(), " "))
	fmt.Println("-I POSTROUTING 1", strings.Join(c.Backstop(), " "))
	// The refusal of what the gate labelled, in filter.
	fmt.Println("*filter")
	for _, rule := range c.RejectRules(false) {
		fmt.Println("-A", c.Chain, strings.Join(rule, " "))
	}
	fmt.Println("-I INPUT 1", strings.Join(c.Jump(), " "))
	fmt.Println("-I FORWARD 1", strings.Join(c.ForwardJump(), " "))
	// Output:
	// *mangle
	// -A SKNOCK -m mark --mark 0x20000000/0x20000000 -g SKNOCK-GRANT
	// -A SKNOCK -m mark --mark 0x40000000/0x40000000 -g SKNOCK-REJECT
	// -A SKNOCK -m addrtype --dst-type UNICAST -m addrtype ! --dst-type LOCAL,ANYCAST -j RETURN
	// -A SKNOCK -p tcp -m tcp --tcp-flags SYN,ACK,FIN,RST SYN -j SKNOCK-SYN
	// -A SKNOCK -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
	// -A SKNOCK -i lo -j RETURN
	// -A SKNOCK -p tcp -m tcp --dport 22 -j RETURN
	// -A SKNOCK -p tcp -m tcp --dport 2000 -j DROP
	// -A SKNOCK -p udp -m udp --dport 10000:60000 -m length --length 328:65535 -j NFQUEUE --queue-num 100
	// -A SKNOCK -p udp -m udp --dport 10000:60000 -j DROP
	// -A SKNOCK-SYN -i lo -j RETURN
	// -A SKNOCK-SYN -p tcp -m tcp --dport 22 -j RETURN
	// -A SKNOCK-SYN -p tcp -m tcp --dport 2000 -j NFQUEUE --queue-num 101
	// -A SKNOCK-GRANT -j MARK --set-xmark 0x0/0x20000000
	// -A SKNOCK-REJECT -j MARK --set-xmark 0x0/0x40000000
	// -A SKNOCK-REJECT -m conntrack --ctstate NEW -m connlabel --label 127 --set -j RETURN
	// -A SKNOCK-REJECT -p tcp -m tcp ! --tcp-flags SYN,ACK,FIN,RST SYN -m conntrack --ctstate INVALID,UNTRACKED -j RETURN
	// -A SKNOCK-REJECT -j DROP
	// -I PREROUTING 1 -j SKNOCK
	// -I POSTROUTING 1 -m conntrack --ctstate DNAT --ctdir ORIGINAL -m connlabel --label 127 -j DROP
	// *filter
	// -A SKNOCK -p tcp -m connlabel --label 127 -j REJECT --reject-with tcp-reset
	// -A SKNOCK -p udp -m connlabel --label 127 -j REJECT --reject-with icmp-port-unreachable
	// -A SKNOCK -p tcp -m tcp --dport 2000 -m addrtype ! --dst-type LOCAL,ANYCAST -m addrtype --dst-type UNICAST -m conntrack ! --ctstate DNAT -j DROP
	// -I INPUT 1 -j SKNOCK
	// -I FORWARD 1 -m conntrack --ctstate DNAT -j SKNOCK
}

func ExampleConfig_Script() {
	c := rules.DefaultConfig()
	script, err := c.Script("remove")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(script)
	// Output:
	// #!/bin/sh
	// # sknock: remove the rules of chain SKNOCK for IPv4 and IPv6.
	// set -eu
	//
	// # iptables
	// if iptables -w -t mangle -S SKNOCK >/dev/null 2>&1; then
	// 	while iptables -w -t mangle -D PREROUTING -j SKNOCK 2>/dev/null; do :; done
	// fi
	// ! iptables -w -t mangle -S SKNOCK >/dev/null 2>&1 || iptables -w -t mangle -F SKNOCK
	// ! iptables -w -t mangle -S SKNOCK-SYN >/dev/null 2>&1 || iptables -w -t mangle -F SKNOCK-SYN
	// ! iptables -w -t mangle -S SKNOCK-GRANT >/dev/null 2>&1 || iptables -w -t mangle -F SKNOCK-GRANT
	// ! iptables -w -t mangle -S SKNOCK-REJECT >/dev/null 2>&1 || iptables -w -t mangle -F SKNOCK-REJECT
	// ! iptables -w -t mangle -S SKNOCK >/dev/null 2>&1 || iptables -w -t mangle -X SKNOCK
	// ! iptables -w -t mangle -S SKNOCK-SYN >/dev/null 2>&1 || iptables -w -t mangle -X SKNOCK-SYN
	// ! iptables -w -t mangle -S SKNOCK-GRANT >/dev/null 2>&1 || iptables -w -t mangle -X SKNOCK-GRANT
	// ! iptables -w -t mangle -S SKNOCK-REJECT >/dev/null 2>&1 || iptables -w -t mangle -X SKNOCK-REJECT
	// if iptables -w -t filter -S SKNOCK >/dev/null 2>&1; then
	// 	while iptables -w -t filter -D INPUT -j SKNOCK 2>/dev/null; do :; done
	// 	while iptables -w -t filter -D FORWARD -m conntrack --ctstate DNAT -j SKNOCK 2>/dev/null; do :; done
	// fi
	// ! iptables -w -t filter -S SKNOCK >/dev/null 2>&1 || iptables -w -t filter -F SKNOCK
	// ! iptables -w -t filter -S SKNOCK >/dev/null 2>&1 || iptables -w -t filter -X SKNOCK
	// while iptables -w -t mangle -D POSTROUTING -m conntrack --ctstate DNAT --ctdir ORIGINAL -m connlabel --label 127 -j DROP 2>/dev/null; do :; done
	//
	// # ip6tables
	// if [ -e /proc/net/if_inet6 ]; then
	// 	if ip6tables -w -t mangle -S SKNOCK >/dev/null 2>&1; then
	// 		while ip6tables -w -t mangle -D PREROUTING -j SKNOCK 2>/dev/null; do :; done
	// 	fi
	// 	! ip6tables -w -t mangle -S SKNOCK >/dev/null 2>&1 || ip6tables -w -t mangle -F SKNOCK
	// 	! ip6tables -w -t mangle -S SKNOCK-SYN >/dev/null 2>&1 || ip6tables -w -t mangle -F SKNOCK-SYN
	// 	! ip6tables -w -t mangle -S SKNOCK-GRANT >/dev/null 2>&1 || ip6tables -w -t mangle -F SKNOCK-GRANT
	// 	! ip6tables -w -t mangle -S SKNOCK-REJECT >/dev/null 2>&1 || ip6tables -w -t mangle -F SKNOCK-REJECT
	// 	! ip6tables -w -t mangle -S SKNOCK >/dev/null 2>&1 || ip6tables -w -t mangle -X SKNOCK
	// 	! ip6tables -w -t mangle -S SKNOCK-SYN >/dev/null 2>&1 || ip6tables -w -t mangle -X SKNOCK-SYN
	// 	! ip6tables -w -t mangle -S SKNOCK-GRANT >/dev/null 2>&1 || ip6tables -w -t mangle -X SKNOCK-GRANT
	// 	! ip6tables -w -t mangle -S SKNOCK-REJECT >/dev/null 2>&1 || ip6tables -w -t mangle -X SKNOCK-REJECT
	// 	if ip6tables -w -t filter -S SKNOCK >/dev/null 2>&1; then
	// 		while ip6tables -w -t filter -D INPUT -j SKNOCK 2>/dev/null; do :; done
	// 		while ip6tables -w -t filter -D FORWARD -m conntrack --ctstate DNAT -j SKNOCK 2>/dev/null; do :; done
	// 	fi
	// 	! ip6tables -w -t filter -S SKNOCK >/dev/null 2>&1 || ip6tables -w -t filter -F SKNOCK
	// 	! ip6tables -w -t filter -S SKNOCK >/dev/null 2>&1 || ip6tables -w -t filter -X SKNOCK
	// 	while ip6tables -w -t mangle -D POSTROUTING -m conntrack --ctstate DNAT --ctdir ORIGINAL -m connlabel --label 127 -j DROP 2>/dev/null; do :; done
	// fi
}
