package main

import (
	"io"
	"net"
	"syscall"
)

// splice copies both ways until either side is done.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	copyHalf := func(dst, src net.Conn) {
		copyStream(dst, src)
		if c, ok := dst.(interface{ CloseWrite() error }); ok {
			c.CloseWrite()
		}
		done <- struct{}{}
	}
	go copyHalf(a, b)
	go copyHalf(b, a)
	<-done
	<-done
}

// copyStream copies src to dst until src ends. Between two sockets it moves the bytes in the kernel
// (splice(2) through a pipe): a passthrough download then costs the gate no copy through its own memory,
// which on two cores held the whole chain back. Go 1.19's io.Copy splices only from a socket into TCP,
// and not at all through bufferedConn.
func copyStream(dst, src net.Conn) (int64, error) {
	var flushed int64
	if b, ok := src.(*bufferedConn); ok {
		// What the gate read ahead of its parse goes first, then the socket itself.
		if n := b.reader.Buffered(); n > 0 {
			head, _ := b.reader.Peek(n)
			w, err := dst.Write(head)
			b.reader.Discard(w)
			if err != nil {
				return int64(w), err
			}
			flushed = int64(w)
		}
		src = b.Conn
	}
	dst = unbuffered(dst)
	s, sok := src.(syscall.Conn)
	d, dok := dst.(syscall.Conn)
	if !sok || !dok {
		n, err := io.Copy(dst, src)
		return flushed + n, err
	}
	sraw, err1 := s.SyscallConn()
	draw, err2 := d.SyscallConn()
	if err1 != nil || err2 != nil {
		n, err := io.Copy(dst, src)
		return flushed + n, err
	}
	n, err := spliceRaw(draw, sraw)
	return flushed + n, err
}

func unbuffered(c net.Conn) net.Conn {
	if b, ok := c.(*bufferedConn); ok {
		return b.Conn
	}
	return c
}

const (
	spliceMove     = 0x1
	spliceNonblock = 0x2
	spliceChunk    = 1 << 20
)

// spliceRaw moves src's bytes to dst through a pipe of its own, waiting on Go's poller (not blocking a
// thread) whenever either socket is not ready.
func spliceRaw(dst, src syscall.RawConn) (int64, error) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return 0, err
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	// The pipe keeps the kernel's default size (64 KiB): a 1 MiB one was slower (1.6 against 1.9-2.3 GB/s),
	// and pipe memory counts against a limit per user across the host (fs.pipe-user-pages-soft): the
	// sidecar's user is uid 1000, likely someone's on the host, and an agent opening many tunnels must not
	// use it up for them.
	var total int64
	for {
		var n int64
		var serr error
		if err := src.Read(func(fd uintptr) bool {
			n, serr = syscall.Splice(int(fd), nil, p[1], nil, spliceChunk, spliceMove|spliceNonblock)
			return serr != syscall.EAGAIN && serr != syscall.EINTR
		}); err != nil {
			return total, err
		}
		if serr != nil {
			return total, serr
		}
		if n == 0 {
			return total, nil // src's end
		}
		for n > 0 {
			var m int64
			var werr error
			if err := dst.Write(func(fd uintptr) bool {
				m, werr = syscall.Splice(p[0], nil, int(fd), nil, int(n), spliceMove|spliceNonblock)
				return werr != syscall.EAGAIN && werr != syscall.EINTR
			}); err != nil {
				return total, err
			}
			if werr != nil {
				return total, werr
			}
			n -= m
			total += m
		}
	}
}
