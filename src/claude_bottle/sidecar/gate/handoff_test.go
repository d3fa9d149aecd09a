package main

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// handOver sends `files` over a new connection to the handoff socket at `path` and returns the answer.
func handOver(t *testing.T, path string, files ...*os.File) string {
	t.Helper()
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var fds []int
	for _, f := range files {
		fds = append(fds, int(f.Fd()))
	}
	var rights []byte
	if len(fds) > 0 {
		rights = syscall.UnixRights(fds...)
	}
	if _, _, err := conn.WriteMsgUnix([]byte("h"), rights, nil); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	said, _ := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(said)
}

func fileOf(t *testing.T, c interface{ File() (*os.File, error) }) *os.File {
	t.Helper()
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestHandoffTakesALoopbackListenerOnceAndServesIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), handoffName)
	handed, err := listenForHandoff(path)
	if err != nil {
		t.Fatal(err)
	}
	// Open to the bottle's user from the start (a pod's is not the gate's): nothing is left to do to it
	// once the handoff, which may come at once, has removed it.
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o666 {
		t.Fatalf("the handoff socket: %v %v, want mode 0666", info, err)
	}
	port, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if said := handOver(t, path, fileOf(t, port.(*net.TCPListener))); said != "ok" {
		t.Fatalf("answer %q", said)
	}
	address := port.Addr().String()
	port.Close() // the gate's copy is the only one left, as in the bottle
	listener := <-handed
	if listener == nil {
		t.Fatal("no listener came out of the handoff")
	}
	defer listener.Close()
	go func() {
		if c, err := listener.Accept(); err == nil {
			c.Write([]byte("served\n"))
			c.Close()
		}
	}()
	client, err := net.Dial("tcp", address)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := bufio.NewReader(client).ReadString('\n')
	client.Close()
	if got != "served\n" {
		t.Fatalf("through the handed-over port: %q", got)
	}
	// Once is all: the socket is gone, and nothing more comes out.
	if _, ok := <-handed; ok {
		t.Fatal("a second listener came out")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the handoff socket is still there: %v", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		t.Fatal("a second handoff connected")
	}
}

func TestHandoffRefusesWhatIsNotTheBottlesListeningPort(t *testing.T) {
	wildcard, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer wildcard.Close()
	loopback, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer loopback.Close()
	other, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	connected, err := net.Dial("tcp", loopback.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer connected.Close()
	unix, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close()
	cases := map[string][]*os.File{
		"nothing":              nil,
		"every address":        {fileOf(t, wildcard.(*net.TCPListener))},
		"another loopback":     {fileOf(t, other.(*net.TCPListener))},
		"UDP":                  {fileOf(t, udp.(*net.UDPConn))},
		"a connection":         {fileOf(t, connected.(*net.TCPConn))},
		"a Unix socket":        {fileOf(t, unix.(*net.UnixListener))},
		"two sockets":          {fileOf(t, loopback.(*net.TCPListener)), fileOf(t, loopback.(*net.TCPListener))},
		"a file, not a socket": {func() *os.File { f, _ := os.Open(os.Args[0]); t.Cleanup(func() { f.Close() }); return f }()},
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), handoffName)
			handed, err := listenForHandoff(path)
			if err != nil {
				t.Fatal(err)
			}
			if said := handOver(t, path, files...); !strings.HasPrefix(said, "error: ") {
				t.Fatalf("answer %q", said)
			}
			if l, ok := <-handed; ok {
				l.Close()
				t.Fatal("a listener came out")
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Fatal("the handoff socket stays open after a refusal")
			}
		})
	}
}
