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
	for _, rule := range c.Rules(false) {
		fmt.Println("-A", c.Chain, strings.Join(rule, " "))
	}
	fmt.Println("-I INPUT 1", strings.Join(c.Jump(), " "))
	// Output:
	// -A SKNOCK -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
	// -A SKNOCK -i lo -j ACCEPT
	// -A SKNOCK -p tcp -m tcp --dport 22 -j ACCEPT
	// -A SKNOCK -p tcp -m mark --mark 0x1/0x1 -j REJECT --reject-with tcp-reset
	// -A SKNOCK -p udp -m mark --mark 0x1/0x1 -j REJECT --reject-with icmp-port-unreachable
	// -A SKNOCK -p tcp -m tcp --dport 2000 --tcp-flags SYN,ACK,FIN,RST SYN -j NFQUEUE --queue-num 101
	// -A SKNOCK -p tcp -m tcp --dport 2000 -j DROP
	// -A SKNOCK -p udp -m udp --dport 10000:60000 -m length --length 328:65535 -j NFQUEUE --queue-num 100
	// -A SKNOCK -p udp -m udp --dport 10000:60000 -j DROP
	// -I INPUT 1 -j SKNOCK
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
	// if iptables -w -S SKNOCK >/dev/null 2>&1; then
	// 	while iptables -w -D INPUT -j SKNOCK 2>/dev/null; do :; done
	// 	iptables -w -F SKNOCK
	// 	iptables -w -X SKNOCK
	// fi
	//
	// # ip6tables
	// if [ -e /proc/net/if_inet6 ]; then
	// 	if ip6tables -w -S SKNOCK >/dev/null 2>&1; then
	// 		while ip6tables -w -D INPUT -j SKNOCK 2>/dev/null; do :; done
	// 		ip6tables -w -F SKNOCK
	// 		ip6tables -w -X SKNOCK
	// 	fi
	// fi
}
