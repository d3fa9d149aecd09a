package main

import (
	"bytes"
	"compress/bzip2"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/binary"
	"io"
	"sync"
)

// A secret can leave compressed with nothing to say so: `gzip -c key | curl --data-binary @- …` sends a body
// with no Content-Encoding, whose bytes none of the views of views.go reads. The gate finds where a compressed
// stream begins by its own header (gzip, zlib, a zip entry's deflate, bzip2; raw deflate, which has none, at
// the start of a body or of a decoded run) and reads what it inflates to as it reads anything else. Data in a
// format it cannot inflate (xz, 7z) is refused. A body's streams are inflated as the body goes (streamedBody),
// anything else's at once (inflatedIn).

type streamKind int

const (
	gzipStream streamKind = iota
	zlibStream
	zipDeflate
	bzip2Stream
	rawDeflate
)

// streamStart is where a compressed stream begins in some bytes: its header at `at`, the decoder's input from
// `data` (after the header for a zip entry, whose deflate has none of its own).
type streamStart struct {
	at, data int
	kind     streamKind
}

var (
	gzipMagic  = []byte{0x1f, 0x8b, 0x08}
	zipMagic   = []byte("PK\x03\x04")
	bzip2Magic = []byte("BZh")
	// Formats no package of Go's reads. Both magics are six bytes, so chance alone does not make them in
	// binary data, and neither can appear in UTF-8 text.
	unreadable = []struct {
		name  string
		magic []byte
	}{{"xz", []byte("\xfd7zXZ\x00")}, {"7z", []byte("7z\xbc\xaf\x27\x1c")}}
)

// streamsIn finds the compressed streams whose headers begin in data at or after from. Unless final (data
// is all there will be), it stops where data ends before it can tell whether a header begins there, and says
// where: upto is the first offset it has not looked at.
func streamsIn(data []byte, from int, final bool) (starts []streamStart, upto int) {
	for i := from; i < len(data); i++ {
		skip := bytes.IndexAny(data[i:], "\x1f\x78BP")
		if skip < 0 {
			i = len(data)
		} else {
			i += skip
		}
		if !final && len(data)-i < 30 {
			return starts, i
		}
		if i == len(data) {
			break
		}
		switch data[i] {
		case 0x1f:
			if bytes.HasPrefix(data[i:], gzipMagic) {
				starts = append(starts, streamStart{i, i, gzipStream})
			}
		case 0x78: // zlib: deflate with a 32 KiB window, no preset dictionary (Go reads none), and a check
			// that makes the two bytes a multiple of 31
			if i+1 < len(data) && data[i+1]&0x20 == 0 && (uint(data[i])<<8|uint(data[i+1]))%31 == 0 {
				starts = append(starts, streamStart{i, i, zlibStream})
			}
		case 'B':
			if bytes.HasPrefix(data[i:], bzip2Magic) && i+3 < len(data) && '1' <= data[i+3] && data[i+3] <= '9' {
				starts = append(starts, streamStart{i, i, bzip2Stream})
			}
		case 'P':
			if !bytes.HasPrefix(data[i:], zipMagic) || i+30 > len(data) {
				continue
			}
			if binary.LittleEndian.Uint16(data[i+8:]) != 8 { // not deflate: a stored entry is read as it is
				continue
			}
			at := i + 30 + int(binary.LittleEndian.Uint16(data[i+26:])) + int(binary.LittleEndian.Uint16(data[i+28:]))
			if at > len(data) {
				if !final {
					return starts, i
				}
				continue
			}
			starts = append(starts, streamStart{i, at, zipDeflate})
		}
	}
	return starts, len(data)
}

// unreadableIn names a compressed format in data that the gate cannot read ("" if none).
func unreadableIn(data []byte) string {
	for _, u := range unreadable {
		if bytes.Contains(data, u.magic) {
			return u.name
		}
	}
	return ""
}

func decoderFor(kind streamKind, r io.Reader) (io.Reader, error) {
	switch kind {
	case gzipStream:
		z, err := gzip.NewReader(r)
		if err == nil {
			z.Multistream(false) // a stream that follows has its own header, found on its own
		}
		return z, err
	case zlibStream:
		return zlib.NewReader(r)
	case bzip2Stream:
		return bzip2.NewReader(r), nil
	default:
		return flate.NewReader(r), nil
	}
}

// Bounds on what is inflated at once, outside a body (a header or a decoded run holds a few KiB, which a
// bomb may make a thousand times larger), and how many streams are tried in one text.
const (
	maxInflatedAtOnce = 4 << 20
	maxStreamsAtOnce  = 64
	maxDepth          = 2 // gzip in gzip, or base64 in gzip
)

// inflatedIn is what the compressed streams in data inflate to, as far as each goes (a stream cut short
// gives what its bytes hold), with raw deflate tried from data's start.
func inflatedIn(data []byte) [][]byte {
	starts, _ := streamsIn(data, 0, true)
	if mayBeDeflate(data) {
		starts = append([]streamStart{{0, 0, rawDeflate}}, starts...)
	}
	var out [][]byte
	left := maxInflatedAtOnce
	for i, st := range starts {
		if i > maxStreamsAtOnce || left <= 0 {
			break
		}
		var r io.Reader
		if st.kind == rawDeflate {
			// Tried on every decoded run: a decoder's 32 KiB window is made once, not each time.
			f := deflaters.Get().(io.ReadCloser)
			f.(flate.Resetter).Reset(bytes.NewReader(data), nil)
			defer deflaters.Put(f)
			r = f
		} else if d, err := decoderFor(st.kind, bytes.NewReader(data[st.data:])); err == nil {
			r = d
		} else {
			continue
		}
		inflated, _ := io.ReadAll(io.LimitReader(r, int64(left)))
		if len(inflated) > 0 {
			out = append(out, inflated)
			left -= len(inflated)
		}
	}
	return out
}

var deflaters = sync.Pool{New: func() any { return flate.NewReader(bytes.NewReader(nil)) }}

// mayBeDeflate says whether data can begin a deflate stream: its first block's type is one of the three, and a
// block stored as it is has a length and that length's complement.
func mayBeDeflate(data []byte) bool {
	if len(data) < 2 {
		return false
	}
	switch data[0] >> 1 & 3 {
	case 3:
		return false
	case 0:
		return len(data) >= 5 && data[1] == ^data[3] && data[2] == ^data[4]
	}
	return true
}

// inflater inflates one stream of a body as the body's bytes arrive, in a goroutine of its own (decoders
// pull their input; one that has read what there is waits for more rather than fail), and hands on all it
// decoded each time it waits.
type inflater struct {
	next    int64 // the body's offset of the next byte it is to be given
	in      chan []byte
	out     chan []byte
	idle    chan struct{} // it has handed on all it could decode and waits for more
	done    chan struct{} // its stream ended (or was not one)
	quit    chan struct{}
	ended   bool
	waiting bool
	pending []byte
	decoded []byte // not yet handed on
	// what it inflated to, read as a body is: the last bytes kept to be read with what follows
	tail   []byte
	before carried
}

func startInflater(kind streamKind, at int64) *inflater {
	f := &inflater{next: at, in: make(chan []byte), out: make(chan []byte), idle: make(chan struct{}),
		done: make(chan struct{}), quit: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer f.handOn()
		switch kind {
		case bzip2Stream: // whole blocks only, for any reader: it has nothing to hand on sooner
			r := bzip2.NewReader(f)
			buf := make([]byte, 32<<10)
			for {
				n, err := r.Read(buf)
				f.decoded = append(f.decoded, buf[:n]...)
				f.handOn()
				if err != nil {
					return
				}
			}
		case gzipStream:
			if skipGzipHeader(f) == nil {
				inflateTo(f, f.emit)
			}
		case zlibStream:
			if _, err := f.ReadByte(); err == nil {
				if _, err := f.ReadByte(); err == nil {
					inflateTo(f, f.emit)
				}
			}
		default:
			inflateTo(f, f.emit)
		}
	}()
	return f
}

func (f *inflater) emit(c byte) {
	f.decoded = append(f.decoded, c)
	if len(f.decoded) >= 32<<10 {
		f.handOn()
	}
}

func (f *inflater) handOn() {
	if len(f.decoded) == 0 {
		return
	}
	select {
	case f.out <- f.decoded:
	case <-f.quit:
	}
	f.decoded = nil
}

// ReadByte gives the decoder what it was fed; once that is read, it hands on what it decoded and waits for more.
func (f *inflater) ReadByte() (byte, error) {
	for len(f.pending) == 0 {
		f.handOn()
		select {
		case f.idle <- struct{}{}:
		case <-f.quit:
			return 0, io.ErrClosedPipe
		}
		select {
		case more, ok := <-f.in:
			if !ok {
				return 0, io.EOF
			}
			f.pending = more
		case <-f.quit:
			return 0, io.ErrClosedPipe
		}
	}
	c := f.pending[0]
	f.pending = f.pending[1:]
	return c, nil
}

func (f *inflater) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c, err := f.ReadByte()
	if err != nil {
		return 0, err
	}
	p[0] = c
	n := copy(p[1:], f.pending)
	f.pending = f.pending[n:]
	return n + 1, nil
}

// feed gives the stream more of its bytes (end: the body has no more) and returns what they inflate to: when
// it returns, the decoder has read them and waits for more, or has ended, or (past budget bytes) is stopped.
func (f *inflater) feed(data []byte, end bool, budget int64) [][]byte {
	var out [][]byte
	// untilDone: once its input is closed, a decoder may ask again after being told it has ended.
	collect := func(untilDone bool) {
		for {
			select {
			case o := <-f.out:
				out = append(out, o)
				if budget -= int64(len(o)); budget < 0 {
					f.stop()
					f.ended = true
					return
				}
			case <-f.idle:
				if !untilDone {
					f.waiting = true
					return
				}
			case <-f.done:
				f.ended = true
				return
			}
		}
	}
	if !f.waiting && !f.ended {
		collect(false)
	}
	if f.ended {
		return out
	}
	f.waiting = false
	if end {
		close(f.in)
	} else {
		f.in <- data
	}
	f.next += int64(len(data))
	collect(end)
	return out
}

func (f *inflater) stop() {
	select {
	case <-f.quit:
	default:
		close(f.quit)
	}
}
