package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

func TestTheDirectDialerKeepsTheSSRFRule(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	d := &net.Dialer{Timeout: 2 * time.Second}
	for _, tc := range []struct {
		listed map[string][]string
		ok     bool
	}{
		{map[string][]string{}, false},
		{map[string][]string{"10.0.0.1": {}}, false},
		{map[string][]string{"127.0.0.1": {}}, true},
		{map[string][]string{"localhost": {"1"}}, false}, // the name is not the address dialed
	} {
		g := &gate{cfg: &Config{PrivatePorts: tc.listed}}
		c, err := g.dialPublicOrListed(d)(context.Background(), "tcp", l.Addr().String())
		if tc.ok != (err == nil) {
			t.Errorf("listed %v: dial error %v, want ok=%v", tc.listed, err, tc.ok)
		}
		if err == nil {
			c.Close()
		} else if !tc.ok && !strings.Contains(err.Error(), "egress.private_hosts") {
			t.Errorf("the refusal should say what to do: %v", err)
		}
	}
}

func TestPrivateRanges(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1": true, "10.1.2.3": true, "172.17.0.1": true,
		"192.168.1.1": true, "169.254.169.254": true, "100.64.0.1": true, "::1": true, "fd00::1": true,
		"fe80::1": true, "::ffff:10.0.0.1": true, "8.8.8.8": false, "2001:db8::1": false, "172.32.0.1": false} {
		if got := isPrivate(net.ParseIP(addr)); got != want {
			t.Errorf("isPrivate(%s) = %v, want %v", addr, got, want)
		}
	}
}
