package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// pair returns the two ends of one connection of the given network ("unix" or "tcp").
func pair(t *testing.T, network string) (net.Conn, net.Conn) {
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "s")
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	c, err := net.Dial(network, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return c, <-accepted
}

// The passthrough path as the gate runs it: the bottle's Unix connection (with bytes the gate read ahead
// while parsing the CONNECT) spliced to pipelock's TCP connection. Every byte arrives in order both ways at
// once, and each side's end reaches the other.
func TestSpliceCarriesEveryByteBothWaysAndEachEnd(t *testing.T) {
	bottle, gateSide := pair(t, "unix")
	upstream, pipelock := pair(t, "tcp")
	up := make([]byte, 8<<20+12345)
	down := make([]byte, 24<<20+777)
	rand.Read(up)
	rand.Read(down)

	// The bottle has sent its first bytes, and the gate's reader took more than the request line.
	bottle.Write(up[:1000])
	reader := bufio.NewReaderSize(gateSide, 4096)
	reader.Peek(1000)
	go func() {
		splice(&bufferedConn{gateSide, reader}, upstream)
		gateSide.Close()
		upstream.Close()
	}()

	sum := func(c net.Conn, got chan<- [32]byte) {
		h := sha256.New()
		io.Copy(h, c)
		var s [32]byte
		copy(s[:], h.Sum(nil))
		got <- s
	}
	atPipelock, atBottle := make(chan [32]byte, 1), make(chan [32]byte, 1)
	go sum(pipelock, atPipelock)
	go sum(bottle, atBottle)
	go func() {
		pipelock.Write(down)
		pipelock.(*net.TCPConn).CloseWrite()
	}()
	bottle.Write(up[1000:])
	bottle.(*net.UnixConn).CloseWrite()

	for name, c := range map[string]struct {
		got  chan [32]byte
		want []byte
	}{"upload": {atPipelock, up}, "download": {atBottle, down}} {
		select {
		case got := <-c.got:
			if got != sha256.Sum256(c.want) {
				t.Errorf("%s: the bytes that arrived are not the bytes sent", name)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: the end did not arrive", name)
		}
	}
}

// Where a side is no socket (as in the gate's tests), the copy still happens, through memory.
func TestCopyStreamFallsBackWhereThereIsNoSocket(t *testing.T) {
	a, b := net.Pipe()
	dst, far := pair(t, "tcp")
	go func() {
		a.Write([]byte("through memory"))
		a.Close()
	}()
	go func() {
		copyStream(dst, b)
		dst.Close()
	}()
	got, _ := io.ReadAll(far)
	if !bytes.Equal(got, []byte("through memory")) {
		t.Errorf("got %q", got)
	}
}
