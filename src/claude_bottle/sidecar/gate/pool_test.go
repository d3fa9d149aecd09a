package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakePipelock answers CONNECT as pipelock does: a refusal for the targets in `refused`, else 200, then ends
// the TLS with a certificate of the bottle's CA and answers every request with what it saw. It counts the
// tunnels it opened.
type fakePipelock struct {
	listener net.Listener
	mu       sync.Mutex
	connects map[string]int
	requests []string
}

func startFakePipelock(t *testing.T, a *authority, refused ...string) *fakePipelock {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fakePipelock{listener: l, connects: map[string]int{}}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(conn, a, refused)
		}
	}()
	return p
}

func (p *fakePipelock) serve(conn net.Conn, a *authority, refused []string) {
	defer conn.Close()
	reader := bufio.NewReader(conn)
	req, err := http.ReadRequest(reader)
	if err != nil || req.Method != http.MethodConnect {
		return
	}
	p.mu.Lock()
	p.connects[req.Host]++
	p.mu.Unlock()
	for _, r := range refused {
		if r == req.Host {
			io.WriteString(conn, "HTTP/1.1 403 Forbidden\r\nContent-Length: 12\r\n\r\nnot allowed\n")
			return
		}
	}
	io.WriteString(conn, "HTTP/1.1 200 Connection Established\r\n\r\n")
	host, _, _ := net.SplitHostPort(req.Host)
	tlsConn := tls.Server(&bufferedConn{conn, reader}, &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return a.leaf(host)
	}})
	in := bufio.NewReader(tlsConn)
	for {
		r, err := http.ReadRequest(in)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		p.requests = append(p.requests, r.Method+" "+r.Host+r.URL.RequestURI()+" "+string(body))
		p.mu.Unlock()
		answer := "seen " + r.URL.Path
		fmt.Fprintf(tlsConn, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(answer), answer)
	}
}

func (p *fakePipelock) tunnels(target string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.connects[target]
}

// bottleRequest is one connection of the bottle's: CONNECT target through the gate, TLS trusting the
// bottle's CA, one request. It returns the CONNECT's status and the answer's body.
func bottleRequest(t *testing.T, g *gate, a *authority, target, method, path, body string) (int, string) {
	inside, outside := net.Pipe()
	go g.handle(outside)
	defer inside.Close()
	inside.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(inside, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	reader := bufio.NewReader(inside)
	resp, err := http.ReadResponse(reader, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		answer, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(answer)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(a.certPEM)
	host, _, _ := net.SplitHostPort(target)
	tlsConn := tls.Client(&bufferedConn{inside, reader}, &tls.Config{RootCAs: roots, ServerName: host})
	req, _ := http.NewRequest(method, "https://"+host+path, strings.NewReader(body))
	if err := req.Write(tlsConn); err != nil {
		t.Fatalf("request to %s: %v", target, err)
	}
	answer, err := http.ReadResponse(bufio.NewReader(tlsConn), req)
	if err != nil {
		t.Fatalf("answer from %s: %v", target, err)
	}
	text, _ := io.ReadAll(answer.Body)
	return answer.StatusCode, string(text)
}

func TestTheBottlesNextConnectionsToATargetReusePipelocksTunnelAndAreStillRead(t *testing.T) {
	a, err := newAuthority()
	if err != nil {
		t.Fatal(err)
	}
	const secret = "sk-the-bottles-own-secret-0123456789"
	fake := startFakePipelock(t, a, "refused.example:443")
	counter := newCounter([]string{secret})
	g := newGate(&Config{Secrets: []string{secret}}, a, counter, x509.NewCertPool())
	g.pipelock = fake.listener.Addr().String()

	for i := 0; i < 3; i++ {
		status, answer := bottleRequest(t, g, a, "pypi.org:443", "GET", fmt.Sprintf("/simple/%d", i), "")
		if status != 200 || answer != fmt.Sprintf("seen /simple/%d", i) {
			t.Fatalf("request %d: %d %q", i, status, answer)
		}
	}
	if n := fake.tunnels("pypi.org:443"); n != 1 {
		t.Errorf("pipelock was asked for %d tunnels to pypi.org for three connections one after another, want 1", n)
	}
	// Every connection counts in the report once.
	if got := string(counter.snapshot()); !strings.Contains(got, `"host":"pypi.org","decision":"allowed","reason":"allowed, looked inside","count":3`) {
		t.Errorf("report: %s", got)
	}

	// What the gate reads it still refuses, in a reused tunnel too, and nothing of it reaches pipelock.
	status, answer := bottleRequest(t, g, a, "pypi.org:443", "POST", "/upload", "x="+secret)
	if status != http.StatusForbidden || !strings.Contains(answer, "blocked") {
		t.Errorf("a secret in a reused tunnel: %d %q", status, answer)
	}
	for _, seen := range fake.requests {
		if strings.Contains(seen, secret) {
			t.Errorf("pipelock got the secret: %q", seen)
		}
	}

	// A target pipelock refuses is asked for each time, and its refusal goes back as it is.
	for i := 0; i < 2; i++ {
		status, answer := bottleRequest(t, g, a, "refused.example:443", "GET", "/", "")
		if status != http.StatusForbidden || answer != "not allowed\n" {
			t.Errorf("refused target: %d %q", status, answer)
		}
	}
	if n := fake.tunnels("refused.example:443"); n != 2 {
		t.Errorf("pipelock was asked %d times about a target it refuses, want 2", n)
	}

	// Past the most targets kept, one is let go: its next connection asks pipelock again.
	for i := 0; i < maxInspectedTargets; i++ {
		spare, _ := net.Pipe()
		g.inspectedTargetAccepted(fmt.Sprintf("n%d.example:443", i), spare)
	}
	if len(g.inspected) != maxInspectedTargets {
		t.Errorf("%d targets kept, want at most %d", len(g.inspected), maxInspectedTargets)
	}

	// Connections at once each get a tunnel of their own.
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if status, _ := bottleRequest(t, g, a, "files.example:443", "GET", fmt.Sprint("/", i), ""); status != 200 {
				t.Errorf("parallel request %d: %d", i, status)
			}
		}(i)
	}
	wg.Wait()
}
