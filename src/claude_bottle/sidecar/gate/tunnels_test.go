package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakePipelock stands where pipelock listens: it answers CONNECT (refusing targets that start with
// "refused."), ends the TLS with the bottle's authority as pipelock does, speaking HTTP/2 when asked, and
// answers each request with what it saw.
type fakePipelock struct {
	listener net.Listener
	connects atomic.Int32 // CONNECTs asked
	open     atomic.Int32 // tunnels open
	busy     atomic.Int32 // requests being answered
	mostBusy atomic.Int32
	hold     chan struct{} // when set, each answer waits for it to close
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
		hold := f.hold
		f.mu.Unlock()
		if n := f.busy.Add(1); n > f.mostBusy.Load() {
			f.mostBusy.Store(n)
		}
		if hold != nil {
			<-hold
		}
		f.busy.Add(-1)
		fmt.Fprintf(w, "%s %s %s", r.Host, r.URL.RequestURI(), r.Proto)
	}), ConnState: func(_ net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew:
			f.open.Add(1)
		case http.StateClosed, http.StateHijacked:
			f.open.Add(-1)
		}
	}}
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
	answer := throughGate(t, addr, roots, "files.pythonhosted.org", "/f")
	if answer != "200 files.pythonhosted.org /f HTTP/2.0" {
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

func newTestGate(t *testing.T, cfg *Config) (*gate, *fakePipelock, string, *x509.CertPool) {
	a, err := newAuthority()
	if err != nil {
		t.Fatal(err)
	}
	g := newGate(cfg, a, newCounter(cfg.Secrets), nil)
	fake := startFakePipelock(t, a)
	g.pipelock = fake.listener.Addr().String()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go g.serve(l)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(a.certPEM)
	return g, fake, l.Addr().String(), roots
}

func waitFor(t *testing.T, what string, ok func() bool) {
	for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5 s for %s", what)
		}
	}
}

// A bottle that connects and sends nothing, to ever new targets, leaves no tunnel behind.
func TestAConnectionThatSendsNothingLeavesNoTunnelBehind(t *testing.T) {
	_, fake, addr, _ := newTestGate(t, &Config{})
	for i := 0; i < 20; i++ {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "CONNECT pypi.org:%d HTTP/1.1\r\nHost: pypi.org:%d\r\n\r\n", 1000+i, 1000+i)
		resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %v %v", resp, err)
		}
		conn.Close()
	}
	waitFor(t, "the tunnels to close", func() bool { return fake.open.Load() == 0 })
	if n := fake.connects.Load(); n != 20 {
		t.Errorf("%d CONNECTs, want 20", n)
	}
}

// Requests the bottle does not read the answers of hold the gate's memory over HTTP/2: at most
// inspectedInFlight are under way at once; the others wait and go on when those end.
func TestInspectedRequestsUnderWayAreBounded(t *testing.T) {
	_, fake, addr, roots := newTestGate(t, &Config{})
	hold := make(chan struct{})
	fake.mu.Lock()
	fake.hold = hold
	fake.mu.Unlock()
	n := inspectedInFlight + 10
	var wg sync.WaitGroup
	answers := make([]string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			answers[i] = throughGate(t, addr, roots, "pypi.org", fmt.Sprintf("/%d", i))
		}(i)
	}
	waitFor(t, "the first requests to arrive", func() bool { return fake.busy.Load() == inspectedInFlight })
	time.Sleep(200 * time.Millisecond)
	if got := fake.busy.Load(); got != inspectedInFlight {
		t.Errorf("%d requests under way at once, want %d", got, inspectedInFlight)
	}
	close(hold)
	wg.Wait()
	for i, answer := range answers {
		if !strings.HasPrefix(answer, "200 ") {
			t.Errorf("request %d: %q", i, answer)
		}
	}
	if most := fake.mostBusy.Load(); most > inspectedInFlight {
		t.Errorf("%d under way at most, want %d", most, inspectedInFlight)
	}
}

// After a 101 a reverse proxy copies both ways unread: an upgrade is refused before it reaches pipelock.
func TestAConnectionUpgradeIsRefused(t *testing.T) {
	_, fake, addr, roots := newTestGate(t, &Config{})
	throughGate(t, addr, roots, "pypi.org", "/first") // the target's tunnel is open
	for _, headers := range []string{"Connection: Upgrade\r\nUpgrade: websocket\r\n", "Upgrade: h2c\r\n",
		"Connection: keep-alive, UPGRADE\r\n"} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n")
		reader := bufio.NewReader(conn)
		http.ReadResponse(reader, &http.Request{Method: http.MethodConnect})
		tlsConn := tls.Client(&bufferedConn{conn, reader}, &tls.Config{ServerName: "pypi.org", RootCAs: roots})
		fmt.Fprintf(tlsConn, "GET /ws HTTP/1.1\r\nHost: pypi.org\r\n%s\r\n", headers)
		answer, err := http.ReadResponse(bufio.NewReader(tlsConn), nil)
		if err != nil || answer.StatusCode != http.StatusForbidden {
			t.Errorf("%q: %v %v, want 403", headers, answer, err)
		}
		conn.Close()
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.seen) != 1 {
		t.Errorf("pipelock saw %q", fake.seen)
	}
}

// A target's tunnels take new requests for tunnelLife; then pipelock judges it again on a new one.
func TestATargetsTunnelsAreRenewed(t *testing.T) {
	defer func(was time.Duration) { tunnelLife = was }(tunnelLife)
	tunnelLife = 0
	_, fake, addr, roots := newTestGate(t, &Config{})
	for i := 0; i < 3; i++ {
		if answer := throughGate(t, addr, roots, "pypi.org", "/"); !strings.HasPrefix(answer, "200 ") {
			t.Fatalf("%q", answer)
		}
	}
	if n := fake.connects.Load(); n != 3 {
		t.Errorf("%d CONNECTs, want 3 (one per renewal)", n)
	}
}

// A plain-HTTP URL is judged in the spelling it goes on in: "name." is the name.
func TestAPlainURLsHostIsJudgedInOneSpelling(t *testing.T) {
	g := newGate(&Config{PrivatePorts: map[string][]string{"db.internal": {"5432"}}}, nil, newCounter(nil), nil)
	for _, u := range []string{"http://db.internal.:8443/", "http://DB.Internal.:8443/", "http://db.internal..:5432/"} {
		r := httptest.NewRequest("GET", u, nil)
		w := httptest.NewRecorder()
		g.forwardPlain(w, r)
		if w.Code != http.StatusForbidden && w.Code != http.StatusBadRequest {
			t.Errorf("%s: %d %s", u, w.Code, w.Body)
		}
	}
}
