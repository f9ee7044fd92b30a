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
	if err := c.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	// The gate, in mangle, before any DNAT.
	fmt.Println("*mangle")
	for _, rule := range c.Rules(false) {
		fmt.Println("-A", c.Chain, strings.Join(rule, " "))
	}
	fmt.Println("-I PREROUTING 1", strings.Join(c.Jump(), " "))
	fmt.Println("-I POSTROUTING 1", strings.Join(c.Backstop(), " "))
	// The rejection of what the gate marked, in filter.
	fmt.Println("*filter")
	for _, rule := range c.RejectRules(false) {
		fmt.Println("-A", c.Chain, strings.Join(rule, " "))
	}
	fmt.Println("-I INPUT 1", strings.Join(c.Jump(), " "))
	fmt.Println("-I FORWARD 1", strings.Join(c.ForwardJump(), " "))
	// Output:
	// *mangle
	// -A SKNOCK -m addrtype --dst-type UNICAST -m addrtype ! --dst-type LOCAL -j RETURN
	// -A SKNOCK -m mark --mark 0x1/0x1 -j RETURN
	// -A SKNOCK -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
	// -A SKNOCK -i lo -j RETURN
	// -A SKNOCK -p tcp -m tcp --dport 22 -j RETURN
	// -A SKNOCK -p tcp -m tcp --dport 2000 --tcp-flags SYN,ACK,FIN,RST SYN -j NFQUEUE --queue-num 101
	// -A SKNOCK -p tcp -m tcp --dport 2000 -j DROP
	// -A SKNOCK -p udp -m udp --dport 10000:60000 -m length --length 328:65535 -j NFQUEUE --queue-num 100
	// -A SKNOCK -p udp -m udp --dport 10000:60000 -j DROP
	// -I PREROUTING 1 -j SKNOCK
	// -I POSTROUTING 1 -m conntrack --ctstate DNAT --ctdir ORIGINAL -m mark --mark 0x1/0x1 -j DROP
	// *filter
	// -A SKNOCK -p tcp -m mark --mark 0x1/0x1 -j REJECT --reject-with tcp-reset
	// -A SKNOCK -p udp -m mark --mark 0x1/0x1 -j REJECT --reject-with icmp-port-unreachable
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
	// while iptables -w -t mangle -D POSTROUTING -m conntrack --ctstate DNAT --ctdir ORIGINAL -m mark --mark 0x1/0x1 -j DROP 2>/dev/null; do :; done
	// if iptables -w -t mangle -S SKNOCK >/dev/null 2>&1; then
	// 	while iptables -w -t mangle -D PREROUTING -j SKNOCK 2>/dev/null; do :; done
	// 	iptables -w -t mangle -F SKNOCK
	// 	iptables -w -t mangle -X SKNOCK
	// fi
	// if iptables -w -t filter -S SKNOCK >/dev/null 2>&1; then
	// 	while iptables -w -t filter -D INPUT -j SKNOCK 2>/dev/null; do :; done
	// 	while iptables -w -t filter -D FORWARD -m conntrack --ctstate DNAT -j SKNOCK 2>/dev/null; do :; done
	// 	iptables -w -t filter -F SKNOCK
	// 	iptables -w -t filter -X SKNOCK
	// fi
	//
	// # ip6tables
	// if [ -e /proc/net/if_inet6 ]; then
	// 	while ip6tables -w -t mangle -D POSTROUTING -m conntrack --ctstate DNAT --ctdir ORIGINAL -m mark --mark 0x1/0x1 -j DROP 2>/dev/null; do :; done
	// 	if ip6tables -w -t mangle -S SKNOCK >/dev/null 2>&1; then
	// 		while ip6tables -w -t mangle -D PREROUTING -j SKNOCK 2>/dev/null; do :; done
	// 		ip6tables -w -t mangle -F SKNOCK
	// 		ip6tables -w -t mangle -X SKNOCK
	// 	fi
	// 	if ip6tables -w -t filter -S SKNOCK >/dev/null 2>&1; then
	// 		while ip6tables -w -t filter -D INPUT -j SKNOCK 2>/dev/null; do :; done
	// 		while ip6tables -w -t filter -D FORWARD -m conntrack --ctstate DNAT -j SKNOCK 2>/dev/null; do :; done
	// 		ip6tables -w -t filter -F SKNOCK
	// 		ip6tables -w -t filter -X SKNOCK
	// 	fi
	// fi
}
