package main

import (
	"bytes"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// The gate reads every request it forwards in the clear (plain HTTP, and HTTPS it ends itself) and refuses
// one that carries a secret of the bottle's anywhere: method, target, header names and values, body bytes.
// pipelock scans too, but only what its parsers pick out of a body (the fields of JSON, form and multipart
// bodies), and forwards the raw bytes: a secret in a duplicated JSON key, past its nesting limit or in a
// multipart preamble went out unread. This check does not parse: it reads the bytes as they go.

// allowedMethods are the methods a request may have. Any token is a valid method, and a method is sent as it
// is and read by no scanner, so a secret could be one.
var allowedMethods = map[string]bool{http.MethodGet: true, http.MethodHead: true, http.MethodPost: true,
	http.MethodPut: true, http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true}

// secretScanner finds the bottle's secrets in what the gate reads (the lines of pipelock's secrets file,
// which hold each secret and some encodings of it), in the views of views.go:
//   - a secret itself, in the folded and in the decoded text;
//   - its letters and digits, reversed too, and those of its base32 (both alphabets) and base64 (either
//     alphabet) at every alignment after a prefix, in the letters and digits of either text;
//   - its hex, in the hex digits of either text;
//   - its letters and digits, and its pieces, in what the hex and base64 of either text decode to;
//   - its pieces, over requests: see pieces.go.
//
// A secret whose letters and digits are too few to tell from ordinary text is looked for whole only.
type secretScanner struct {
	exact   *index
	sparse  []sparseSecret
	letters *index
	hexes   *index
	pieces  *pieces
	hold    int // bytes of a body kept back until what follows is read: the longest a secret's form can take
	// letters and digits, and hex digits, of a body's passed-on bytes kept to be read with what follows
	carry, carryHex int
}

const (
	minLetters = 12 // fewer letters and digits than this would be found in ordinary text
	// A form's letters may be spread out by escapes and separators; a body keeps this many bytes back per
	// character of its longest form (\U00000041 is ten).
	spread  = 16
	maxHold = 1 << 20
)

func newSecretScanner(secrets []string) *secretScanner {
	s := &secretScanner{exact: newIndex(8), letters: newIndex(8), hexes: newIndex(8), pieces: newPieces()}
	longest := 0
	note := func(form []byte) {
		if len(form) > longest {
			longest = len(form)
		}
	}
	for _, secret := range secrets {
		raw := []byte(secret)
		if folded := lower(fold(raw)); len(folded) >= 8 {
			s.exact.addForm(folded)
			note(folded)
		}
		hexForm := []byte(hex.EncodeToString(raw))
		s.hexes.addForm(hexForm)
		note(hexForm)
		if len(hexForm) > s.carryHex {
			s.carryHex = len(hexForm)
		}
		letters := only(lower(fold(raw)), alnumClass)
		if len(letters) < minLetters {
			if folded := lower(fold(raw)); len(folded) >= 8 {
				s.sparse = append(s.sparse, newSparseSecret(folded))
			}
			continue
		}
		s.letters.addForm(letters)
		s.letters.addForm(reversed(letters))
		if len(letters) > s.carry {
			s.carry = len(letters)
		}
		s.pieces.track(letters)
		// Its hex, and the base64 of its base64, as they are after one layer is decoded: hex of hex, base64
		// of hex, base64 three times over.
		forms := append(encodedForms(raw), hexForm)
		forms = append(forms, encodedForms([]byte(base64.StdEncoding.EncodeToString(raw)))...)
		// Every Caesar shift of its letters (rot13 among them).
		for shift := byte(1); shift < 26; shift++ {
			forms = append(forms, caesar(letters, shift))
		}
		for _, form := range forms {
			if len(form) >= minLetters {
				s.letters.addForm(form)
			}
		}
	}
	s.hold = spread*longest + 64
	if s.hold > maxHold {
		s.hold = maxHold
	}
	return s
}

// sparseSecret is a secret of few letters and digits (mostly punctuation): too few to look for alone, so it is
// looked for in a text's characters that are the secret's own, whatever else is between them (spaces between
// its characters, the zero bytes of UTF-16), forwards and reversed.
type sparseSecret struct {
	chars *byteClass
	forms *index
}

func newSparseSecret(folded []byte) sparseSecret {
	s := sparseSecret{chars: classOf(string(folded)), forms: newIndex(8)}
	s.forms.addForm(folded)
	s.forms.addForm(reversed(folded))
	return s
}

// redactedHost is a host name that carries a secret as the report shows it: its first labels as "[secret]", up
// to the last one that holds the secret, a piece of it, or anything that looks encoded (letters and digits).
func (s *secretScanner) redactedHost(host string) string {
	labels := strings.Split(host, ".")
	for i := 1; i < len(labels); i++ {
		rest := strings.Join(labels[i:], ".")
		letters := only(lower(fold([]byte(labels[i]))), alnumClass)
		encoded := len(letters) >= 8 && bytes.IndexAny(letters, "0123456789") >= 0 &&
			bytes.IndexAny(letters, "abcdefghijklmnopqrstuvwxyz") >= 0
		if whole, _ := s.found([]byte(rest), false, carried{}); !whole && !encoded &&
			len(s.pieces.in(only(lower(fold([]byte(rest))), alnumClass), nil)) == 0 {
			return "[secret]." + rest
		}
	}
	return "[secret]"
}

// encodedForms are the letters and digits (lower case) of a secret's base32, base32hex and base64 that do not
// depend on what comes before or after it, at each alignment after a prefix.
func encodedForms(secret []byte) [][]byte {
	var forms [][]byte
	for _, enc := range []struct {
		bits   int
		encode func([]byte) string
	}{
		{5, base32.StdEncoding.EncodeToString},
		{5, base32.HexEncoding.EncodeToString},
		{6, base64.StdEncoding.EncodeToString},
	} {
		perGroup := map[int]int{5: 5, 6: 3}[enc.bits] // bytes per group of characters
		for shift := 0; shift < perGroup; shift++ {
			encoded := enc.encode(append(make([]byte, shift), secret...))
			first := (8*shift + enc.bits - 1) / enc.bits
			last := 8 * (shift + len(secret)) / enc.bits
			if last > first {
				forms = append(forms, only(lower([]byte(encoded[first:last])), alnumClass))
			}
		}
	}
	return forms
}

// caesar shifts the letters (lower case) of text by shift places; digits stay.
func caesar(text []byte, shift byte) []byte {
	out := make([]byte, len(text))
	for i, c := range text {
		if 'a' <= c && c <= 'z' {
			c = 'a' + (c-'a'+shift)%26
		}
		out[i] = c
	}
	return out
}

func reversed(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[len(b)-1-i] = c
	}
	return out
}

// carried is what a body keeps of the bytes it has passed on, to be read with what follows: a secret spread
// through a body further apart than it holds back is still found in its letters, or its hex digits, together.
type carried struct{ letters, hexDigits []byte }

// keep appends what of passed-on bytes is read with what follows, and forgets what is too far back to matter.
func (c *carried) keep(s *secretScanner, passed []byte) {
	view := lower(decode(fold(passed)))
	c.letters = lastOf(append(c.letters, only(view, alnumClass)...), s.carry)
	c.hexDigits = lastOf(append(c.hexDigits, only(view, hexClass)...), s.carryHex)
}

func lastOf(b []byte, n int) []byte {
	if extra := len(b) - n; extra > 0 {
		return append(b[:0], b[extra:]...)
	}
	return b
}

func joined(before, after []byte) []byte {
	if len(before) == 0 {
		return after
	}
	return append(append(make([]byte, 0, len(before)+len(after)), before...), after...)
}

// found says whether a secret is in text whole; with record, the pieces of secrets in it are recorded too, and
// complete says whether they, with the pieces earlier requests sent, make up a whole secret. before is what
// came before text in the same body, if any. Data compressed in a format the gate cannot read counts as a
// secret here; look tells it apart.
func (s *secretScanner) found(text []byte, record bool, before carried) (whole, complete bool) {
	v := s.look(text, record, before, true, 0)
	return v.whole || v.unreadable != "", v.complete
}

// verdict is what look finds: a secret whole, the last of its pieces, or data it cannot read (its format).
type verdict struct {
	whole, complete bool
	unreadable      string
}

func (v verdict) refused() bool { return v.whole || v.complete || v.unreadable != "" }

// look is found, with what compressed streams inflate to (see compressed.go): those that begin in text itself
// (unless a body's own inflaters read them: rawStreams false) and in what its encoded runs decode to.
func (s *secretScanner) look(text []byte, record bool, before carried, rawStreams bool, depth int) verdict {
	folded := fold(text)
	texts := [][]byte{folded}
	if decoded := decode(folded); !bytes.Equal(decoded, folded) {
		texts = append(texts, decoded)
	}
	if qp, changed := quotedPrintable(texts[len(texts)-1]); changed {
		texts = append(texts, decode(qp))
	}
	var sent []pieceAt
	inLetters := func(letters []byte) bool {
		if s.letters.has(letters) {
			return true
		}
		if record {
			sent = s.pieces.in(letters, sent)
		}
		return false
	}
	// text itself (i == 0), and what its escapes stand for (a percent-encoded gzip)
	sources := [][]byte{text}
	sources = append(sources, texts[1:]...)
	for _, t := range texts {
		view := lower(t)
		digits := joined(before.hexDigits, only(view, hexClass))
		if s.exact.has(view) || s.hexes.has(digits) || inLetters(joined(before.letters, only(view, alnumClass))) {
			return verdict{whole: true}
		}
		for _, sparse := range s.sparse {
			if sparse.forms.has(only(view, sparse.chars)) {
				return verdict{whole: true}
			}
		}
		// Decoded hex, base64 and base32 are bytes, not text: only their letters and digits are looked at.
		for _, raw := range decodedRuns(t, digits) {
			if inLetters(lettersOf(raw)) {
				return verdict{whole: true}
			}
			sources = append(sources, raw)
		}
	}
	for i, src := range sources {
		if name := unreadableIn(src); name != "" {
			return verdict{unreadable: name}
		}
		if depth >= maxDepth || (i == 0 && !rawStreams) {
			continue
		}
		for _, inflated := range inflatedIn(src) {
			if v := s.look(inflated, record, carried{}, true, depth+1); v.refused() {
				return v
			}
		}
	}
	return verdict{complete: record && s.pieces.add(sent)}
}

// refusedRequest says why the gate will not forward r ("" if it may): its method, or a secret in its
// method, target or headers. The body is read as it goes (scannedBody).
func (s *secretScanner) refusedRequest(r *http.Request) string {
	if !allowedMethods[r.Method] {
		// Not named: it may be the secret.
		return "the request's method is not one the sidecar forwards (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)"
	}
	// No scanner here or in pipelock reads a compressed body, and pipelock judges by the first of these
	// headers only: "identity" then "gzip" would send gzip unread.
	for _, coding := range strings.Split(strings.Join(r.Header.Values("Content-Encoding"), ","), ",") {
		if c := strings.ToLower(strings.TrimSpace(coding)); c != "" && c != "identity" {
			return "the request's body is compressed (Content-Encoding), which no scanner can read; send it plain"
		}
	}
	// After a 101 a reverse proxy copies both ways unread: no WebSocket (or any other upgrade) past the gate.
	if len(r.Header.Values("Upgrade")) > 0 || headerHasToken(r.Header, "Connection", "upgrade") {
		return "the request asks to upgrade the connection (WebSocket), whose bytes the sidecar would not read"
	}
	var head bytes.Buffer
	head.WriteString(r.Method + " " + r.RequestURI + " " + r.Host + "\n")
	for name, values := range r.Header {
		for _, v := range values {
			head.WriteString(name + ": " + v + "\n")
		}
	}
	for name := range r.Trailer {
		head.WriteString("trailer " + name + "\n")
	}
	v := s.look(head.Bytes(), true, carried{}, true, 0)
	if v.unreadable != "" {
		return "the request carries data compressed as " + v.unreadable + ", which the sidecar cannot read; send it plain"
	}
	whole, complete := v.whole, v.complete
	if whole {
		return "the request carries a secret of the bottle's (in its method, target or headers)"
	}
	if complete {
		return "the request would complete a secret of the bottle's that it and earlier requests send in pieces"
	}
	return ""
}

// scannedBody passes a request body on as it is read, keeping back the last bytes that could begin a
// secret (in any of its forms) until what follows them has been read: a secret is refused before any of it has
// been passed on. The compressed streams in it are inflated as it goes, and what they inflate to is read too.
type scannedBody struct {
	src     io.ReadCloser
	scanner *secretScanner
	kept    []byte // read and scanned, not yet passed on
	ready   []byte // scanned and free to pass on
	err     error  // from src, once kept is passed on
	chunk   []byte
	// bytes read into kept since it was last scanned, and all bytes scanned (held-back ones again)
	unscanned, scanned int
	before             carried
	// the body's offset of kept[0], and how far it has been searched for the headers of compressed streams
	base, searched int64
	streams        []*inflater
	begun          bool  // raw deflate, which has no header, was looked for at its start
	inflated       int64 // bytes its streams inflated to
}

// blockedBody ends a request whose body the gate will not pass on; the reverse proxy answers 403 for it.
type blockedBody string

func (b blockedBody) Error() string { return string(b) }

var (
	errSecretInBody = blockedBody("the request body carries a secret of the bottle's")
	errPiecesInBody = blockedBody("the request body would complete a secret of the bottle's that it and earlier " +
		"requests send in pieces")
	errInflatesTooFar = blockedBody(fmt.Sprintf("the request body holds compressed data that inflates to more "+
		"than %d MiB, more than the sidecar reads; send less at a time", maxInflatedBody>>20))
	errTooManyStreams = blockedBody(fmt.Sprintf("the request body holds more than %d compressed streams open at "+
		"once, more than the sidecar reads", maxOpenStreams))
)

func errUnreadableInBody(format string) error {
	return blockedBody("the request body holds data compressed as " + format +
		", which the sidecar cannot read; send it plain")
}

// A body's compressed streams: how much they may inflate to in all (the scanners read 3-10 MB/s), and how
// many may be open at once (where data looks like a header by chance, the decoder fails within a few bytes).
const (
	maxInflatedBody = 64 << 20
	maxOpenStreams  = 64
)

// scanEvery is how many bytes a body reads before it scans again (unless the body ends first): a client that
// sends a byte at a time costs no more to read than one that sends it all at once.
const scanEvery = 4 << 10

func (b *scannedBody) Read(p []byte) (int, error) {
	for len(b.ready) == 0 {
		if b.err != nil {
			if len(b.kept) > 0 {
				b.ready, b.kept = b.kept, nil
				break
			}
			return 0, b.err
		}
		if b.chunk == nil {
			b.chunk = make([]byte, 32<<10)
		}
		n, err := b.src.Read(b.chunk)
		b.kept = append(b.kept, b.chunk[:n]...)
		b.unscanned += n
		if err != nil {
			b.err = err
		} else if b.unscanned < scanEvery || b.unscanned < b.scanner.hold {
			continue // each scan reads the held-back bytes again: at least as many new ones make that at most double
		}
		b.unscanned = 0
		b.scanned += len(b.kept)
		refused := b.inflate(err != nil)
		if refused == nil {
			switch v := b.scanner.look(b.kept, true, b.before, false, 0); {
			case v.unreadable != "":
				refused = errUnreadableInBody(v.unreadable)
			case v.whole:
				refused = errSecretInBody
			case v.complete:
				refused = errPiecesInBody
			}
		}
		if refused != nil {
			b.stopStreams()
			b.kept, b.ready = nil, nil
			b.err = refused
			return 0, b.err
		}
		// What may begin a compressed stream's header, not yet read whole, stays too.
		pass := len(b.kept) - b.scanner.hold
		if searched := int(b.searched - b.base); searched < pass {
			pass = searched
		}
		if pass > 0 {
			b.ready, b.kept = b.kept[:pass], append([]byte{}, b.kept[pass:]...)
			b.before.keep(b.scanner, b.ready)
			b.base += int64(pass)
		}
	}
	n := copy(p, b.ready)
	b.ready = b.ready[n:]
	return n, nil
}

// inflate starts an inflater for each compressed stream that begins in what kept holds that is new, gives
// every open one the bytes it has not had (at the body's end, its end), and reads what they inflate to.
func (b *scannedBody) inflate(end bool) error {
	if !b.begun {
		b.begun = true
		if mayBeDeflate(b.kept) {
			b.streams = []*inflater{startInflater(rawDeflate, 0)}
		}
	}
	starts, upto := streamsIn(b.kept, int(b.searched-b.base), end)
	b.searched = b.base + int64(upto)
	for _, st := range starts {
		b.streams = append(b.streams, startInflater(st.kind, b.base+int64(st.data)))
	}
	open := b.streams[:0]
	for _, f := range b.streams {
		if err := b.read(f, f.feed(b.kept[f.next-b.base:], false, maxInflatedBody-b.inflated)); err != nil {
			return err
		}
		if end {
			if err := b.read(f, f.feed(nil, true, maxInflatedBody-b.inflated)); err != nil {
				return err
			}
		}
		if !f.ended {
			open = append(open, f)
		}
	}
	b.streams = open
	if len(open) > maxOpenStreams {
		return errTooManyStreams
	}
	return nil
}

// read looks at what a stream inflated to, with the last bytes of what it inflated to before.
func (b *scannedBody) read(f *inflater, out [][]byte) error {
	if len(out) == 0 {
		return nil
	}
	text := f.tail
	for _, o := range out {
		b.inflated += int64(len(o))
		text = append(text, o...)
	}
	if b.inflated > maxInflatedBody {
		return errInflatesTooFar
	}
	switch v := b.scanner.look(text, true, f.before, true, 1); {
	case v.unreadable != "":
		return errUnreadableInBody(v.unreadable)
	case v.whole:
		return errSecretInBody
	case v.complete:
		return errPiecesInBody
	}
	if hold := b.scanner.hold; len(text) > hold {
		f.before.keep(b.scanner, text[:len(text)-hold])
		text = append([]byte{}, text[len(text)-hold:]...)
	}
	f.tail = text
	return nil
}

func (b *scannedBody) stopStreams() {
	for _, f := range b.streams {
		f.stop()
	}
	b.streams = nil
}

func (b *scannedBody) Close() error {
	b.stopStreams()
	return b.src.Close()
}

// headerHasToken says whether any of the `name` headers lists `token` (comma-separated, any letter case).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
