package main

import (
	"bytes"
	"compress/bzip2"
	"encoding/binary"
	"io"
	"strconv"
)

// A secret can leave compressed with nothing to say so: `gzip -c key | curl --data-binary @- …` sends a body
// with no Content-Encoding, whose bytes none of the views of views.go reads. The gate finds where a compressed
// stream begins by its own header (gzip, zlib with any window, bzip2, a zip entry; raw deflate, which has none,
// at the start of a body, of a multipart part or of a long encoded run) and reads what it inflates to as it
// reads anything else. A body's streams are followed as the body goes (streamSet), with those in what they
// inflate to and in what the body's base64, hex and escapes decode to (encodedView); a header's, at once
// (inflatedIn). Data in a format it cannot inflate (xz, 7z, LZMA, a zip entry's other methods, bzip2's
// randomised blocks) is refused.

type streamKind int

const (
	gzipStream streamKind = iota
	zlibStream
	rawDeflate // tried where it may begin: it has no header
	zipDeflate // a zip entry's, where its header says
	bzip2Stream
)

// streamStart is where a compressed stream's decoder begins reading (a zip entry's deflate and a multipart
// part's raw deflate: after the header that shows where it is).
type streamStart struct {
	data int
	kind streamKind
}

var (
	gzipMagic   = []byte{0x1f, 0x8b, 0x08}
	zipMagic    = []byte("PK\x03\x04")
	bzip2Magic  = []byte("BZh")
	bzip2Block  = []byte("1AY&SY")
	partStart   = []byte("\r\n\r\n")
	headerBytes = "\x1f\x08\x18\x28\x38\x48\x58\x68\x78BP\r" // what a header can begin with
	// Formats no package of Go's reads. Each magic is six bytes, so chance alone does not make it in binary
	// data, and neither can appear in UTF-8 text.
	unreadable = []struct {
		name  string
		magic []byte
	}{{"xz", []byte("\xfd7zXZ\x00")}, {"7z", []byte("7z\xbc\xaf\x27\x1c")}}
	// Zip's methods that are compression the gate does not read (deflate64, LZMA, zstd, xz, PPMd, AES); a
	// stored (0), deflated (8) or bzip2 (12) entry is read.
	zipUnreadable = map[uint16]string{9: "deflate64", 14: "LZMA", 93: "zstd", 95: "xz", 98: "PPMd", 99: "AES"}
)

// lookahead is how many bytes any header needs to be told from chance (a zip entry's name and extra field
// aside: until they have arrived, the entry's header holds the bytes from it back).
const lookahead = 30

// streamsIn finds the compressed streams whose headers begin in data at or after from. Unless final (data
// is all there will be), it stops where data ends before it can tell whether a header begins there, and says
// where: upto is the first offset it has not looked at; and it names the zip entries whose header data ends
// inside of (their name and extra field can take 128 KiB), to be looked at again with more (zipEntry).
func streamsIn(data []byte, from int, final bool) (starts []streamStart, upto int, zips []int) {
	for i := from; i < len(data); i++ {
		if skip := bytes.IndexAny(data[i:], headerBytes); skip < 0 {
			i = len(data)
		} else {
			i += skip
		}
		if !final && len(data)-i < lookahead {
			return starts, i, zips
		}
		if i == len(data) {
			break
		}
		rest := data[i:]
		switch c := rest[0]; {
		case bytes.HasPrefix(rest, gzipMagic):
			starts = append(starts, streamStart{i, gzipStream})
		case c&0x0f == 8 && len(rest) > 2:
			// zlib: deflate with a window of up to 32 KiB, no preset dictionary (which no reader has but the
			// writer), a check that makes the two bytes a multiple of 31, and deflate after them; not a PNG's
			// image data (a screenshot inflates to tens of MB of pixels, which would cost seconds to read in
			// each request to the API that carries it)
			if rest[1]&0x20 == 0 && (uint(c)<<8|uint(rest[1]))%31 == 0 && mayBeDeflate(rest[2:]) &&
				!(i >= 4 && string(data[i-4:i]) == "IDAT") && !(i >= 8 && string(data[i-8:i-4]) == "fdAT") {
				starts = append(starts, streamStart{i, zlibStream})
			}
		case bytes.HasPrefix(rest, bzip2Magic):
			if len(rest) > 10 && '1' <= rest[3] && rest[3] <= '9' && bytes.HasPrefix(rest[4:], bzip2Block) {
				starts = append(starts, streamStart{i, bzip2Stream})
			}
		case bytes.HasPrefix(rest, zipMagic) && len(rest) >= 30:
			switch at, whole := zipEntry(data, i); {
			case !whole && !final:
				zips = append(zips, i)
			case whole && mayBeDeflate(data[at:]):
				starts = append(starts, streamStart{at, zipDeflate})
			}
		case bytes.HasPrefix(rest, partStart) && mayBeDeflate(rest[4:]):
			starts = append(starts, streamStart{i + 4, rawDeflate})
		}
	}
	return starts, len(data), zips
}

// zipEntry is where the data of the zip entry whose header is at i begins, if data holds all of that header.
// Its data is read as deflate whatever its method says: a reader may go by the archive's central directory.
func zipEntry(data []byte, i int) (at int, whole bool) {
	at = i + 30 + int(binary.LittleEndian.Uint16(data[i+26:])) + int(binary.LittleEndian.Uint16(data[i+28:]))
	return at, at <= len(data)
}

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

// unreadableIn names data compressed in a way the gate cannot read in data ("" if none).
func unreadableIn(data []byte) string {
	for _, u := range unreadable {
		if bytes.Contains(data, u.magic) {
			return u.name
		}
	}
	// LZMA's own format (`xz --format=lzma`, Python's FORMAT_ALONE): its usual properties, a dictionary of a
	// power of two, and a size not given.
	for i := 0; ; {
		j := bytes.Index(data[i:], lzmaNoSize)
		if j < 0 {
			break
		}
		if at := i + j - 5; at >= 0 && data[at] == 0x5d {
			if size := binary.LittleEndian.Uint32(data[at+1:]); size >= 1<<12 && size&(size-1) == 0 {
				return "LZMA"
			}
		}
		i += j + 1
	}
	// bzip2 0.9's randomised blocks, which Go's reader refuses
	for i := 0; ; {
		j := bytes.Index(data[i:], bzip2Block)
		if j < 0 {
			break
		}
		if at := i + j - 4; at >= 0 && bytes.HasPrefix(data[at:], bzip2Magic) && at+14 < len(data) &&
			data[at+14]&0x80 != 0 {
			return "bzip2 with randomised blocks"
		}
		i += j + 1
	}
	// A zip entry the gate cannot read, as its local header says or as the archive's central directory does
	// (which is what most readers go by): the archive is refused before its end, without which none reads it.
	for _, entry := range []struct {
		magic                  []byte
		version, flags, method int // where each field is
	}{{zipMagic, 4, 6, 8}, {zipCentral, 6, 8, 10}} {
		for i := 0; ; {
			j := bytes.Index(data[i:], entry.magic)
			if j < 0 {
				break
			}
			if rest := data[i+j:]; len(rest) >= 30 && binary.LittleEndian.Uint16(rest[entry.version:])&0xff <= 63 {
				method := binary.LittleEndian.Uint16(rest[entry.method:])
				if name, ok := zipUnreadable[method]; ok {
					return "a zip entry of method " + strconv.Itoa(int(method)) + " (" + name + ")"
				}
				if binary.LittleEndian.Uint16(rest[entry.flags:])&1 != 0 && (method == 0 || method == 8) {
					return "an encrypted zip entry"
				}
			}
			i += j + 1
		}
	}
	return ""
}

var zipCentral = []byte("PK\x01\x02")

var lzmaNoSize = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Bounds: what is inflated of a header's or a run's streams at once (a header holds a few KiB, which a bomb
// may make a thousand times larger), and how deep streams are followed (gzip in gzip in gzip).
const (
	maxInflatedAtOnce = 4 << 20
	maxDepth          = 3
)

// outBuf gathers what a decoder decodes and hands it on a piece at a time (flush may say stop).
type outBuf struct {
	data    []byte
	flush   func([]byte) bool
	stopped bool
}

func (o *outBuf) put(c byte) bool {
	o.data = append(o.data, c)
	if len(o.data) >= 32<<10 {
		return o.handOn()
	}
	return !o.stopped
}

func (o *outBuf) handOn() bool {
	if len(o.data) > 0 && !o.stopped {
		o.stopped = !o.flush(o.data)
	}
	o.data = nil
	return !o.stopped
}

// decompress runs a stream's decoder on src, to its end or until out says stop.
func decompress(kind streamKind, src io.ByteReader, out *outBuf) {
	defer out.handOn()
	switch kind {
	case bzip2Stream: // whole blocks only, for any reader: it has nothing to hand on sooner
		r := bzip2.NewReader(readerOf{src})
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			out.data = append(out.data, buf[:n]...)
			if !out.handOn() || err != nil {
				return
			}
		}
	case gzipStream:
		if skipGzipHeader(src) != nil {
			return
		}
	case zlibStream:
		for i := 0; i < 2; i++ {
			if _, err := src.ReadByte(); err != nil {
				return
			}
		}
	}
	inflateTo(src, out.put)
}

// readerOf reads a ByteReader as an io.Reader, a byte at a time: what is handed on waits for no more.
type readerOf struct{ io.ByteReader }

func (r readerOf) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c, err := r.ReadByte()
	if err != nil {
		return 0, err
	}
	p[0] = c
	return 1, nil
}

// inflatedIn is what the compressed streams in data inflate to, as far as each goes (a stream cut short gives
// what its bytes hold), with raw deflate tried from data's start; each takes from budget, and over says it
// ran out.
func inflatedIn(data []byte, budget *int64) (out [][]byte, over bool) {
	starts, _, _ := streamsIn(data, 0, true)
	if mayBeDeflate(data) {
		starts = append([]streamStart{{0, rawDeflate}}, starts...)
	}
	for _, st := range starts {
		var inflated []byte
		decompress(st.kind, bytes.NewReader(data[st.data:]), &outBuf{flush: func(b []byte) bool {
			inflated = append(inflated, b...)
			*budget -= int64(len(b))
			return *budget >= 0
		}})
		if len(inflated) > 0 {
			out = append(out, inflated)
		}
		if *budget < 0 {
			return out, true
		}
	}
	return out, false
}

// inflater inflates one stream as its bytes arrive, in a goroutine of its own (decoders pull their input; one
// that has read what there is waits for more rather than fail), and hands on all it decoded each time it
// waits: what any decoder could make of the bytes so far, the gate has read before they go on.
type inflater struct {
	next    int64 // the offset (in what it is read from) of the next byte it is to be given
	depth   int   // 0: a body's
	tried   bool  // raw deflate, where it may begin: no header says it is a stream
	in      chan []byte
	out     chan []byte
	idle    chan struct{} // it has handed on all it could decode and waits for more
	done    chan struct{} // its stream ended (or was not one)
	quit    chan struct{}
	ended   bool
	waiting bool
	pending []byte
	decoded outBuf // not yet handed on
	// what it inflated to, read as a body is: the last bytes kept to be read with what follows; and the
	// streams in it
	tail   []byte
	before carried
	inner  streamSet
	views  []*encodedView
}

// newViews are the encoded views of a stream of bytes, whose streams are depth deep.
func newViews(depth int) []*encodedView {
	views := []*encodedView{{kind: 'b'}, {kind: 'h'}, {kind: '%'}, {kind: 'u'}}
	for _, v := range views {
		v.streams.depth = depth
	}
	return views
}

func startInflater(kind streamKind, at int64, depth int) *inflater {
	f := &inflater{next: at, depth: depth, in: make(chan []byte), out: make(chan []byte),
		idle: make(chan struct{}), done: make(chan struct{}), quit: make(chan struct{})}
	f.inner.depth = depth + 1
	f.decoded.flush = func(b []byte) bool {
		select {
		case f.out <- b:
			return true
		case <-f.quit:
			return false
		}
	}
	go func() {
		defer close(f.done)
		decompress(kind, f, &f.decoded)
	}()
	return f
}

// ReadByte gives the decoder what it was fed; once that is read, it hands on what it decoded and waits for
// more.
func (f *inflater) ReadByte() (byte, error) {
	for len(f.pending) == 0 {
		f.decoded.handOn()
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

// feed gives the stream more of its bytes (end: there are no more) and returns what they inflate to, and how
// many of them the decoder read: when it returns, the decoder has read them and waits for more, or has ended,
// or (past budget bytes) is stopped.
func (f *inflater) feed(data []byte, end bool, budget int64) (out [][]byte, read int) {
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
		return out, 0
	}
	f.waiting = false
	if end {
		close(f.in)
	} else {
		f.in <- data
	}
	f.next += int64(len(data))
	collect(end)
	read = len(data)
	if f.ended {
		select {
		case <-f.done: // what it had not read when it ended: its goroutine is gone
			read -= len(f.pending)
		default:
		}
	}
	return out, read
}

func (f *inflater) stop() {
	select {
	case <-f.quit:
	default:
		close(f.quit)
	}
	f.inner.stop()
	for _, v := range f.views {
		v.streams.stop()
	}
}

// streamSet follows the compressed streams of one stream of bytes: a body's, or what a stream in it inflates to.
type streamSet struct {
	depth    int
	open     []*inflater
	searched int64 // how far its bytes have been looked through for headers
	began    bool  // raw deflate, which has no header, was looked for at its start
	// (below a body) its bytes from bufAt on that are not yet looked through
	buf   []byte
	bufAt int64
	tryAt []int64 // where raw deflate may begin (an encoded run's start), to be tried once 5 bytes are there
	zips  []int64 // where zip entries' headers begin that have not all arrived
	runAt int64   // (a view's) where the run being read began, if it may yet be long enough to try: kept
	inRun bool
}

// bodyStreams is what a streamSet needs of the body it is part of.
type bodyStreams interface {
	started(kind streamKind, at int64, depth int) (*inflater, error) // nil: not tried

	read(f *inflater, out [][]byte) error
	left() int64
	feeding(n int) error // n more bytes go to a decoder
}

// step looks for streams in data (the bytes from offset at to the last one there is so far), starts an
// inflater for each new one, gives every open one what it has not had (with end, the end), and reads what they
// inflate to. It says from where data is still needed: a header that data ends inside of may begin there.
func (s *streamSet) step(b bodyStreams, data []byte, at int64, end bool) (int64, error) {
	if !s.began && (len(data) >= 5 || end) {
		s.began = true
		if mayBeDeflate(data) {
			if err := s.start(b, rawDeflate, at); err != nil {
				return 0, err
			}
		}
	}
	from := int(s.searched - at)
	if name := unreadableIn(data[max0(from-lookahead):]); name != "" {
		return 0, errUnreadableInBody(name)
	}
	starts, upto, zips := streamsIn(data, from, end)
	s.searched = at + int64(upto)
	// Zip entries whose headers had not all arrived: looked at again, now.
	waitingZips := s.zips[:0]
	for _, z := range s.zips {
		switch entry, whole := zipEntry(data, int(z-at)); {
		case !whole && !end:
			waitingZips = append(waitingZips, z)
		case whole && mayBeDeflate(data[entry:]):
			starts = append(starts, streamStart{entry, zipDeflate})
		}
	}
	s.zips = waitingZips
	for _, z := range zips {
		s.zips = append(s.zips, at+int64(z))
	}
	for _, st := range starts {
		if err := s.start(b, st.kind, at+int64(st.data)); err != nil {
			return 0, err
		}
	}
	waiting := s.tryAt[:0]
	for _, p := range s.tryAt {
		if p < at {
			continue
		}
		switch rest := data[p-at:]; {
		case len(rest) < 5 && !end:
			waiting = append(waiting, p)
		case mayBeDeflate(rest):
			if err := s.start(b, rawDeflate, p); err != nil {
				return 0, err
			}
		}
	}
	s.tryAt = waiting
	keep := s.searched // what the bytes are kept from: what is not looked through, or not tried
	if len(waiting) > 0 && waiting[0] < keep {
		keep = waiting[0]
	}
	if len(s.zips) > 0 && s.zips[0] < keep {
		keep = s.zips[0]
	}
	still := s.open[:0]
	for _, f := range s.open {
		out, read := f.feed(data[f.next-at:], false, b.left())
		if err := b.feeding(read); err != nil {
			return 0, err
		}
		if err := b.read(f, out); err != nil {
			return 0, err
		}
		if end {
			out, _ := f.feed(nil, true, b.left())
			if err := b.read(f, out); err != nil {
				return 0, err
			}
		}
		if !f.ended {
			still = append(still, f)
			continue
		}
		if _, err := f.inner.more(b, nil, true); err != nil { // what its last bytes began
			return 0, err
		}
		for _, v := range f.views {
			if err := v.take(b, nil, true); err != nil {
				return 0, err
			}
		}
		f.stop()
	}
	s.open = still
	return keep, nil
}

func (s *streamSet) start(b bodyStreams, kind streamKind, at int64) error {
	f, err := b.started(kind, at, s.depth)
	if f != nil {
		s.open = append(s.open, f)
	}
	return err
}

// more steps through bytes that follow those given before (below a body: what a stream inflated to).
func (s *streamSet) more(b bodyStreams, data []byte, end bool) (int64, error) {
	s.buf = append(s.buf, data...)
	upto, err := s.step(b, s.buf, s.bufAt, end)
	if s.inRun && s.runAt < upto {
		upto = s.runAt
	}
	if err == nil && upto > s.bufAt { // every open stream has had all of buf: only the unsearched rest stays
		s.buf = append(s.buf[:0], s.buf[upto-s.bufAt:]...)
		s.bufAt = upto
	}
	return upto, err
}

// count is how many streams are open in it, and in what they inflate to: found by a header, and raw deflate
// tried where it may begin.
func (s *streamSet) count() (headed, tried int) {
	for _, f := range s.open {
		if f.tried {
			tried++
		} else {
			headed++
		}
		h, t := f.inner.count()
		headed, tried = headed+h, tried+t
		for _, v := range f.views {
			h, t := v.streams.count()
			headed, tried = headed+h, tried+t
		}
	}
	return headed, tried
}

func (s *streamSet) stop() {
	for _, f := range s.open {
		f.stop()
	}
	s.open = nil
}

// encodedView decodes one encoding (base64, hex or percent-escapes) out of a body's bytes as they arrive, and
// follows the compressed streams in what it decodes to: a long gzip sent as hex or base64, or escaped in a
// form, is read whole, not only as far as one look at the body reaches. A run of the encoding's characters is
// decoded from its start; anything else ends it.
type encodedView struct {
	kind byte // 'b' base64 (either alphabet; line breaks inside), 'h' hex, '%' percent-escapes ('+' a
	// space, as in a form), 'u' percent-escapes ('+' itself, as a URL's path has it)
	group   []byte // characters not yet decoded (less than a byte's, or a group's, worth)
	next    int64  // the body's offset of the next byte it is to be given
	begun   bool   // (percent) an escape has been seen: what came before holds no escaped stream
	streams streamSet
	// (base64, hex) the run being read: how many characters, and where what it decodes to begins
	run   int
	runAt int64
}

// minRun is how long a run must be for raw deflate (which has no header) to be tried from its start: the
// base64 of a secret's deflate is longer, and the hex of a SHA-1 shorter.
const minRun = 48

// inRun counts a character of a run; at minRun, raw deflate is tried where the run's bytes begin.
func (v *encodedView) inRun(out []byte) {
	if v.run == 0 {
		v.runAt = v.streams.bufAt + int64(len(v.streams.buf)+len(out))
	}
	v.streams.runAt, v.streams.inRun = v.runAt, v.run < minRun
	if v.run++; v.run == minRun {
		v.streams.tryAt = append(v.streams.tryAt, v.runAt)
	}
}

func (v *encodedView) take(b bodyStreams, data []byte, end bool) error {
	out := make([]byte, 0, len(data)*3/4+4)
	switch v.kind {
	case 'b', 'h':
		values, size := &base64Values, 4
		if v.kind == 'h' {
			values, size = &hexValues, 2
		}
		for _, c := range data {
			value := values[c]
			if value < 0 {
				if (c == '\r' || c == '\n') && v.kind == 'b' { // a line break inside base64
					continue
				}
				if v.run > 0 {
					v.group, v.run, v.streams.inRun = v.group[:0], 0, false
				}
				continue
			}
			v.inRun(out)
			if v.group = append(v.group, byte(value)); len(v.group) < size {
				continue
			}
			g := v.group
			if size == 2 {
				out = append(out, g[0]<<4|g[1])
			} else {
				out = append(out, g[0]<<2|g[1]>>4, g[1]<<4|g[2]>>2, g[2]<<6|g[3])
			}
			v.group = v.group[:0]
		}
	case '%', 'u':
		for _, c := range data {
			if len(v.group) > 0 { // inside an escape
				if v.group = append(v.group, c); len(v.group) < 3 {
					continue
				}
				if high, low := hexValues[v.group[1]], hexValues[v.group[2]]; high >= 0 && low >= 0 {
					v.begun = true
					out = append(out, byte(high<<4|low))
				} else if v.begun {
					out = append(out, v.group...)
				}
				v.group = v.group[:0]
				continue
			}
			switch {
			case c == '%':
				v.group = append(v.group, c)
			case !v.begun:
			case c == '+' && v.kind == '%':
				out = append(out, ' ')
			default:
				out = append(out, c)
			}
		}
	}
	v.next += int64(len(data))
	if len(out) == 0 && !end {
		return nil
	}
	_, err := v.streams.more(b, out, end)
	return err
}

// base64Values and hexValues are what each character stands for (-1: not one of the alphabet's).
var base64Values, hexValues [256]int8

func init() {
	for i := range base64Values {
		base64Values[i], hexValues[i] = -1, -1
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := 0; i < 64; i++ {
		base64Values[alphabet[i]] = int8(i)
	}
	base64Values['-'], base64Values['_'] = 62, 63
	for i, c := range "0123456789abcdef" {
		hexValues[c] = int8(i)
	}
	for i, c := range "ABCDEF" {
		hexValues[c] = int8(i + 10)
	}
}

func max0(n int) int {
	if n < 0 {
		return 0
	}
	return n
}
