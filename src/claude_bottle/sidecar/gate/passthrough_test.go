package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tunnelPipelock stands where pipelock listens for tunnels it does not look inside: it answers each CONNECT
// when `hold` lets it (a refusal while `refusing` is set), then echoes what the tunnel carries, which shows
// the test everything that reached it past its answer.
type tunnelPipelock struct {
	addr     string
	connects atomic.Int32
	refusing atomic.Bool
	// keepAlive: after a refusal, read on for more requests even when the CONNECT said "Connection: close"
	// (pipelock, a Go server, reads on only when it did not)
	keepAlive atomic.Bool
	smuggled  atomic.Int32 // requests read after a refused CONNECT, on its connection
	mu        sync.Mutex
	hold      chan struct{} // each answer waits for it to close
}

func startTunnelPipelock(t *testing.T) *tunnelPipelock {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	f := &tunnelPipelock{addr: l.Addr().String(), hold: make(chan struct{})}
	close(f.hold)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			wait := f.hold
			f.mu.Unlock()
			go func() {
				defer conn.Close()
				reader := bufio.NewReader(conn)
				req, err := http.ReadRequest(reader)
				if err != nil || req.Method != http.MethodConnect {
					return
				}
				f.connects.Add(1)
				<-wait
				if f.refusing.Load() {
					io.WriteString(conn, "HTTP/1.1 403 Forbidden\r\nContent-Length: 16\r\n\r\nblocked: refused")
					for !req.Close || f.keepAlive.Load() {
						if req, err = http.ReadRequest(reader); err != nil {
							return
						}
						f.smuggled.Add(1)
						io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					}
					return
				}
				io.WriteString(conn, "HTTP/1.1 200 Connection Established\r\n\r\n")
				io.Copy(conn, reader)
			}()
		}
	}()
	return f
}

func passthroughGate(t *testing.T, passedFor time.Duration) (*tunnelPipelock, string) {
	g := newGate(&Config{Passthrough: []string{"pass.example"}}, nil, newCounter(nil), nil)
	g.passedFor = passedFor
	fake := startTunnelPipelock(t)
	g.pipelock = fake.addr
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go g.serve(l)
	return fake, l.Addr().String()
}

// connectTo sends a CONNECT for pass.example:443 and returns the connection and the answer's head, read
// within `within`.
func connectTo(t *testing.T, addr string, within time.Duration) (net.Conn, *bufio.Reader, string) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	io.WriteString(conn, "CONNECT pass.example:443 HTTP/1.1\r\nHost: pass.example:443\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(within))
	reader := bufio.NewReader(conn)
	resp, err := http.ReadResponse(reader, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return conn, reader, ""
	}
	conn.SetReadDeadline(time.Time{})
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return conn, reader, resp.Proto + " " + resp.Status + "\n" + string(body)
	}
	return conn, reader, resp.Proto + " " + resp.Status
}

func (f *tunnelPipelock) holdAnswers() func() {
	hold := make(chan struct{})
	f.mu.Lock()
	f.hold = hold
	f.mu.Unlock()
	return func() { close(hold) }
}

// The first tunnel to a passthrough target gets pipelock's own answer, a refusal with its reason too.
func TestAPassthroughTargetsFirstTunnelWaitsForPipelocksAnswer(t *testing.T) {
	fake, addr := passthroughGate(t, tunnelLife)
	fake.refusing.Store(true)
	if _, _, answer := connectTo(t, addr, 5*time.Second); answer != "HTTP/1.1 403 Forbidden\nblocked: refused" {
		t.Fatalf("pipelock's refusal did not reach the bottle as it was: %q", answer)
	}
	fake.refusing.Store(false)
	release := fake.holdAnswers()
	if _, _, head := connectTo(t, addr, 300*time.Millisecond); head != "" {
		t.Fatalf("the bottle was answered %q before pipelock had let any tunnel to the target through", head)
	}
	release()
}

// Once pipelock has let a tunnel to the target through, the next ones start at once: the bottle's first
// bytes wait in pipelock, and nothing of pipelock's own answer reaches the bottle as tunnel data.
func TestLaterTunnelsToATargetPipelockLetThroughStartAtOnce(t *testing.T) {
	fake, addr := passthroughGate(t, tunnelLife)
	conn, reader, head := connectTo(t, addr, 5*time.Second)
	if !strings.HasPrefix(head, "HTTP/1.1 200") {
		t.Fatalf("first tunnel: %q", head)
	}
	io.WriteString(conn, "one")
	if got := readN(t, reader, 3); got != "one" {
		t.Fatalf("first tunnel carried %q", got)
	}
	release := fake.holdAnswers()
	conn, reader, head = connectTo(t, addr, 2*time.Second)
	if !strings.HasPrefix(head, "HTTP/1.1 200") {
		t.Fatalf("a later tunnel waited for pipelock: %q", head)
	}
	io.WriteString(conn, "hello")
	time.Sleep(50 * time.Millisecond)
	release()
	if got := readN(t, reader, 5); got != "hello" {
		t.Fatalf("the later tunnel carried %q, not the bottle's own bytes back", got)
	}
	if n := fake.connects.Load(); n != 2 {
		t.Fatalf("pipelock was asked %d times for 2 tunnels", n)
	}
}

// pipelock refusing a tunnel the bottle was already told to go ahead with ends the bottle's connection:
// nothing of the refusal or the bottle's bytes passes as tunnel data.
func TestARefusalAfterTheGoAheadEndsTheConnection(t *testing.T) {
	fake, addr := passthroughGate(t, tunnelLife)
	conn, reader, _ := connectTo(t, addr, 5*time.Second)
	io.WriteString(conn, "one")
	readN(t, reader, 3)
	fake.refusing.Store(true)
	conn, reader, head := connectTo(t, addr, 2*time.Second)
	if !strings.HasPrefix(head, "HTTP/1.1 200") {
		t.Fatalf("a later tunnel waited for pipelock: %q", head)
	}
	io.WriteString(conn, "secret")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(reader) // its end, or a reset: the gate closed it with "secret" unread
	if timeout, ok := err.(net.Error); len(got) != 0 || ok && timeout.Timeout() {
		t.Fatalf("after pipelock's refusal the bottle read %q (%v), not the end of its connection", got, err)
	}
}

// A request the bottle sends on in a tunnel pipelock refuses never reaches pipelock as a request of its
// own (which the gate would not have read): not after the go-ahead, when its bytes went before pipelock's
// answer (the gate asks pipelock to close after a refusal), and not on a first tunnel, even to a pipelock
// that would read on (the gate sends the bottle's bytes on only once pipelock lets the tunnel through).
func TestARequestSentOnInARefusedTunnelNeverReachesPipelock(t *testing.T) {
	smuggle := "GET http://allowed.example/?leak HTTP/1.1\r\nHost: allowed.example\r\n\r\n"
	fake, addr := passthroughGate(t, tunnelLife)
	connectTo(t, addr, 5*time.Second) // pipelock lets the first through
	fake.refusing.Store(true)
	release := fake.holdAnswers()
	conn, reader, _ := connectTo(t, addr, 2*time.Second)
	io.WriteString(conn, smuggle)
	time.Sleep(100 * time.Millisecond) // the bytes reach pipelock while it judges
	release()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.ReadAll(reader)
	time.Sleep(100 * time.Millisecond)
	if n := fake.smuggled.Load(); n != 0 {
		t.Fatalf("after the go-ahead, pipelock read %d request(s) the bottle sent on in a tunnel it refused", n)
	}

	fake, addr = passthroughGate(t, tunnelLife)
	fake.refusing.Store(true)
	fake.keepAlive.Store(true)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "CONNECT pass.example:443 HTTP/1.1\r\nHost: pass.example:443\r\n\r\n"+smuggle)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, _ := io.ReadAll(conn); !strings.HasSuffix(string(got), "blocked: refused") {
		t.Fatalf("the bottle got %q, not pipelock's refusal alone", got)
	}
	time.Sleep(100 * time.Millisecond)
	if n := fake.smuggled.Load(); n != 0 {
		t.Fatalf("pipelock read %d request(s) the bottle sent on in a refused tunnel", n)
	}
}

// The go-ahead lasts tunnelLife: then pipelock's own answer is waited for again.
func TestTheGoAheadLastsTunnelLife(t *testing.T) {
	fake, addr := passthroughGate(t, 100*time.Millisecond)
	if _, _, head := connectTo(t, addr, 5*time.Second); !strings.HasPrefix(head, "HTTP/1.1 200") {
		t.Fatalf("first tunnel: %q", head)
	}
	time.Sleep(150 * time.Millisecond)
	release := fake.holdAnswers()
	defer release()
	if _, _, head := connectTo(t, addr, 300*time.Millisecond); head != "" {
		t.Fatalf("answered %q after the go-ahead had lapsed, before pipelock", head)
	}
}

func readN(t *testing.T, r *bufio.Reader, n int) string {
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return string(buf)
}
