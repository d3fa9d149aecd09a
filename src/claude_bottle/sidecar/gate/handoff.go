package main

// The bottle's proxy port without a relay. The bottle has no network, so nothing in the sidecar can listen
// on its loopback; but a socket keeps the network namespace it was made in. bottle-init makes the
// listening socket of the proxy port on the bottle's loopback and hands it over handoff.sock (SCM_RIGHTS);
// the gate accepts the bottle's connections on it itself. That takes a process (socat) and its fork per
// connection out of every request, and a hop out of every round trip.
//
// The handoff socket takes one connection, made by bottle-init before the CLI lets anything else run in
// the bottle, and is then closed and removed: an agent cannot hand the gate a socket of its own. What is
// handed over must be a listening TCP socket on a loopback address, so that even a socket from elsewhere
// (a pod's namespace has a network) could not make the gate serve anyone but the bottle's own processes.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

const handoffName = "handoff.sock"

// listenForHandoff opens `path` for the one handoff, for any user (a pod's bottle runs as another); each
// listener handed over (at most one) goes to `handed`, which is closed when the handoff socket is.
func listenForHandoff(path string) (<-chan net.Listener, error) {
	os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// Before the handoff can be taken, and the socket removed with it: bottle-init, as the same user on
	// Docker, may connect the moment it exists.
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return nil, err
	}
	handed := make(chan net.Listener, 1)
	go func() {
		defer close(handed)
		defer os.Remove(path)
		defer l.Close()
		conn, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		listener, err := receiveListener(conn)
		if err != nil {
			conn.Write([]byte("error: " + err.Error() + "\n"))
			return
		}
		conn.Write([]byte("ok\n"))
		handed <- listener
	}()
	return handed, nil
}

// receiveListener reads one message from `conn` and returns the listening loopback TCP socket it carries.
// Any other descriptor that came with it is closed.
func receiveListener(conn *net.UnixConn) (net.Listener, error) {
	buf, oob := make([]byte, 64), make([]byte, syscall.CmsgSpace(4*4))
	_, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("reading the handoff: %v", err)
	}
	var fds []int
	if messages, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range messages {
			if got, err := syscall.ParseUnixRights(&m); err == nil {
				fds = append(fds, got...)
			}
		}
	}
	defer func() {
		for _, fd := range fds {
			syscall.Close(fd)
		}
	}()
	if flags&syscall.MSG_CTRUNC != 0 || len(fds) != 1 {
		return nil, errors.New("the handoff carries one socket")
	}
	if err := checkLoopbackListener(fds[0]); err != nil {
		return nil, err
	}
	file := os.NewFile(uintptr(fds[0]), "bottle proxy port")
	fds = nil // the file owns it now
	defer file.Close()
	return net.FileListener(file) // a duplicate of its own
}

// checkLoopbackListener says why `fd` is not a listening TCP socket on 127.0.0.1, if it is not.
func checkLoopbackListener(fd int) error {
	want := map[int]int{syscall.SO_DOMAIN: syscall.AF_INET, syscall.SO_TYPE: syscall.SOCK_STREAM,
		syscall.SO_PROTOCOL: syscall.IPPROTO_TCP, syscall.SO_ACCEPTCONN: 1}
	for option, value := range want {
		if got, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, option); err != nil || got != value {
			return errors.New("what was handed over is not a listening TCP socket")
		}
	}
	name, err := syscall.Getsockname(fd)
	if addr, ok := name.(*syscall.SockaddrInet4); err != nil || !ok || addr.Addr != [4]byte{127, 0, 0, 1} {
		return errors.New("the socket handed over does not listen on 127.0.0.1 alone")
	}
	return nil
}
