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
	"sync/atomic"
	"testing"
)

// fakePipelock stands where pipelock listens: it answers CONNECT (refusing targets that start with
// "refused."), ends the TLS with the bottle's authority as pipelock does, speaking HTTP/2 when asked, and
// answers each request with what it saw.
type fakePipelock struct {
	listener net.Listener
	connects atomic.Int32
	mu       sync.Mutex
	seen     []string
}

// tunnelListener hands the TLS connections the fake ended to one http.Server (which speaks HTTP/2 only on
// a *tls.Conn it is given as it is).
type tunnelListener struct {
	conns chan net.Conn
	addr  net.Addr
}

func (l *tunnelListener) Accept() (net.Conn, error) {
	c, ok := <-l.conns
	if !ok {
		return nil, io.EOF
	}
	return c, nil
}
func (l *tunnelListener) Close() error   { return nil }
func (l *tunnelListener) Addr() net.Addr { return l.addr }

func startFakePipelock(t *testing.T, a *authority) *fakePipelock {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePipelock{listener: l}
	tunnels := &tunnelListener{conns: make(chan net.Conn), addr: l.Addr()}
	server := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.seen = append(f.seen, r.URL.RequestURI())
		f.mu.Unlock()
		fmt.Fprintf(w, "%s %s %s", r.Host, r.URL.RequestURI(), r.Proto)
	})}
	go server.Serve(tunnels)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				reader := bufio.NewReader(conn)
				req, err := http.ReadRequest(reader)
				if err != nil || req.Method != http.MethodConnect {
					conn.Close()
					return
				}
				f.connects.Add(1)
				host, _, _ := net.SplitHostPort(req.Host)
				if strings.HasPrefix(host, "refused.") {
					io.WriteString(conn, "HTTP/1.1 403 Forbidden\r\nContent-Length: 16\r\n\r\nblocked: refused")
					conn.Close()
					return
				}
				io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
				tlsConn := tls.Server(&bufferedConn{conn, reader}, &tls.Config{
					NextProtos: []string{"h2", "http/1.1"},
					GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
						return a.leaf(host)
					},
				})
				if tlsConn.Handshake() != nil {
					conn.Close()
					return
				}
				tunnels.conns <- tlsConn
			}()
		}
	}()
	return f
}

// throughGate makes one new connection to the gate, as a program in the bottle does: CONNECT, then TLS with
// the bottle's authority, then one GET of `path`. It returns the CONNECT's status line, or the answer.
func throughGate(t *testing.T, gateAddr string, roots *x509.CertPool, host, path string) string {
	conn, err := net.Dial("tcp", gateAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n\r\n", host, host)
	reader := bufio.NewReader(conn)
	resp, err := http.ReadResponse(reader, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.Status
	}
	tlsConn := tls.Client(&bufferedConn{conn, reader}, &tls.Config{ServerName: host, RootCAs: roots})
	fmt.Fprintf(tlsConn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host)
	answer, err := http.ReadResponse(bufio.NewReader(tlsConn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(answer.Body)
	return fmt.Sprintf("%d %s", answer.StatusCode, body)
}

func TestInspectedTunnelsAreKeptForTheBottlesNextConnectionsAndEveryRequestIsStillRead(t *testing.T) {
	a, err := newAuthority()
	if err != nil {
		t.Fatal(err)
	}
	counter := newCounter([]string{testSecret})
	g := newGate(&Config{Secrets: []string{testSecret}}, a, counter, nil)
	fake := startFakePipelock(t, a)
	g.pipelock = fake.listener.Addr().String()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go g.serve(l)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(a.certPEM)
	addr := l.Addr().String()

	for i := 0; i < 5; i++ {
		want := fmt.Sprintf("200 pypi.org /one/%d HTTP/2.0", i)
		if got := throughGate(t, addr, roots, "pypi.org", fmt.Sprintf("/one/%d", i)); got != want {
			t.Fatalf("connection %d: %q, want %q", i, got, want)
		}
	}
	if n := fake.connects.Load(); n != 1 {
		t.Errorf("5 connections one after the other opened %d tunnels, want 1", n)
	}

	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			got[i] = throughGate(t, addr, roots, "pypi.org", fmt.Sprintf("/many/%d", i))
		}(i)
	}
	wg.Wait()
	for i, answer := range got {
		if want := fmt.Sprintf("200 pypi.org /many/%d HTTP/2.0", i); answer != want {
			t.Errorf("connection %d of 8 at once: %q, want %q", i, answer, want)
		}
	}

	// A kept tunnel is no way around the gate's own reading: a request carrying a secret is refused.
	if answer := throughGate(t, addr, roots, "pypi.org", "/x?k="+testSecret); !strings.HasPrefix(answer, "403 ") {
		t.Errorf("a secret on a kept tunnel: %q, want 403", answer)
	}
	fake.mu.Lock()
	for _, path := range fake.seen {
		if strings.Contains(path, testSecret) {
			t.Errorf("pipelock was sent %q", path)
		}
	}
	fake.mu.Unlock()

	// Another target gets tunnels of its own, judged by pipelock first; a refused one is refused at every
	// CONNECT, with pipelock's answer.
	if answer := throughGate(t, addr, roots, "files.pythonhosted.org", "/f"); answer != "200 files.pythonhosted.org /f HTTP/2.0" {
		t.Errorf("another target: %q", answer)
	}
	before := fake.connects.Load()
	for i := 0; i < 2; i++ {
		if answer := throughGate(t, addr, roots, "refused.example", "/"); answer != "403 Forbidden" {
			t.Errorf("a refused target: %q, want pipelock's 403 to the CONNECT", answer)
		}
	}
	if n := fake.connects.Load() - before; n != 2 {
		t.Errorf("a refused target was asked about %d times in 2 connections, want 2", n)
	}
}
