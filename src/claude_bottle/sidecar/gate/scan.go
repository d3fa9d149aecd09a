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
	budget := int64(maxInflatedAtOnce)
	v := s.look(text, record, before, true, 0, &budget)
	return v.whole || v.unreadable != "", v.complete
}

// verdict is what look finds: a secret whole, the last of its pieces, data it cannot read (its format), or more
// compressed data than it reads.
type verdict struct {
	whole, complete bool
	unreadable      string
	over            bool
}

func (v verdict) refused() bool { return v.whole || v.complete || v.unreadable != "" || v.over }

// look is found, with what compressed streams inflate to (see compressed.go), each taking from budget: those
// that begin in text itself and in what its escapes and encoded runs decode to. A body follows its streams
// itself, as it goes (streams false).
func (s *secretScanner) look(text []byte, record bool, before carried, streams bool, depth int, budget *int64) verdict {
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
	// text itself, what its escapes stand for (a percent-encoded gzip), and (below) what its runs decode to
	var sources [][]byte
	if streams {
		sources = append([][]byte{text}, texts[1:]...)
	}
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
			if streams {
				sources = append(sources, raw)
			}
		}
	}
	for _, src := range sources {
		if name := unreadableIn(src); name != "" {
			return verdict{unreadable: name}
		}
		if depth >= maxDepth {
			continue
		}
		inflated, over := inflatedIn(src, budget)
		for _, one := range inflated {
			if v := s.look(one, record, carried{}, true, depth+1, budget); v.refused() {
				return v
			}
		}
		if over {
			return verdict{over: true}
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
	budget := int64(maxInflatedAtOnce)
	v := s.look(head.Bytes(), true, carried{}, true, 0, &budget)
	if v.unreadable != "" {
		return "the request carries data compressed as " + v.unreadable + ", which the sidecar cannot read; send it plain"
	}
	if v.over {
		return fmt.Sprintf("the request's target or headers hold compressed data that inflates to more than %d MiB, "+
			"more than the sidecar reads", maxInflatedAtOnce>>20)
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
	base               int64 // the body's offset of kept[0]
	streams            streamSet
	views              []*encodedView // what its base64, hex and escapes decode to, with their streams
	inflated           int64          // bytes its streams inflated to (those of its headers' and runs' too)
	took, looked, fed  int64          // bytes read from src, looked at (what is held back, and tails, again), and given to decoders
	begun              int            // streams begun
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
	errTooMuchToRead = blockedBody("the request body holds compressed streams that would take more reading " +
		"than the sidecar gives a body (too many handing on a little at a time)")
	errTooManyStreams = blockedBody(fmt.Sprintf("the request body holds more compressed streams than the sidecar "+
		"follows (%d open at once, %d in all)", maxOpenStreams, maxStreams))
)

func errUnreadableInBody(format string) error {
	return blockedBody("the request body holds data compressed as " + format +
		", which the sidecar cannot read; send it plain")
}

// A body's compressed streams: how much they may inflate to in all (the scanners read 3-10 MB/s), how many
// may be open at once (where data looks like a header by chance, the decoder fails within a few bytes), and
// how many it may have.
const (
	maxInflatedBody = 64 << 20
	maxOpenStreams  = 64
	maxStreams      = 100000
	maxTries        = 16
	lookedPerByte   = 8 // (about as many streams open at once)
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
		b.took += int64(n)
		b.kept = append(b.kept, b.chunk[:n]...)
		b.unscanned += n
		if err != nil {
			b.err = err
		} else if b.unscanned < scanEvery || b.unscanned < b.scanner.hold {
			continue // each scan reads the held-back bytes again: at least as many new ones make that at most double
		}
		b.unscanned = 0
		b.scanned += len(b.kept)
		searched, refused := b.streams.step(b, b.kept, b.base, err != nil)
		if b.views == nil {
			b.views = newViews(1)
		}
		for _, v := range b.views {
			if refused == nil {
				refused = v.take(b, b.kept[v.next-b.base:], err != nil)
			}
		}
		// Counted once each has read all there is: where bytes look like a header by chance (a git pack's
		// objects, `(St` in code), the decoder has failed by now.
		if headed, _ := b.open(); refused == nil && headed > maxOpenStreams {
			refused = errTooManyStreams
		}
		if refused == nil {
			budget := b.left()
			b.looked += int64(len(b.kept))
			refused = refusalOf(b.scanner.look(b.kept, true, b.before, false, 0, &budget))
			b.inflated = maxInflatedBody - budget
		}
		if refused != nil {
			b.stopStreams()
			b.kept, b.ready = nil, nil
			b.err = refused
			return 0, b.err
		}
		// What may begin a compressed stream's header, not yet read whole, stays too.
		pass := len(b.kept) - b.scanner.hold
		if unsearched := int(searched - b.base); unsearched < pass {
			pass = unsearched
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

func refusalOf(v verdict) error {
	switch {
	case v.unreadable != "":
		return errUnreadableInBody(v.unreadable)
	case v.whole:
		return errSecretInBody
	case v.complete:
		return errPiecesInBody
	case v.over:
		return errInflatesTooFar
	}
	return nil
}

func (b *scannedBody) left() int64 { return maxInflatedBody - b.inflated }

// feeding counts bytes given to decoders: many streams open at once over the same bytes would make one body
// cost minutes.
func (b *scannedBody) feeding(n int) error {
	if b.fed += int64(n); b.fed > lookedPerByte*(b.took+b.inflated)+maxInflatedAtOnce {
		return errTooMuchToRead
	}
	return nil
}

// started starts an inflater for a stream of the body's (depth 0) or of what one inflates to. Raw deflate,
// which has no header, is tried at a few places at once at most (on text it may decode for long): past that,
// not at all.
func (b *scannedBody) started(kind streamKind, at int64, depth int) (*inflater, error) {
	if b.begun++; b.begun > maxStreams {
		return nil, errTooManyStreams
	}
	if _, tried := b.open(); kind == rawDeflate && tried >= maxTries {
		return nil, nil
	}
	f := startInflater(kind, at, depth)
	f.tried = kind == rawDeflate
	return f, nil
}

// open is how many of its streams are open: found by a header, and raw deflate tried.
func (b *scannedBody) open() (headed, tried int) {
	headed, tried = b.streams.count()
	for _, v := range b.views {
		h, t := v.streams.count()
		headed, tried = headed+h, tried+t
	}
	return headed, tried
}

// read looks at what a stream inflated to, with the last bytes of what it inflated to before, and follows the
// streams in it.
func (b *scannedBody) read(f *inflater, out [][]byte) error {
	if len(out) == 0 {
		return nil
	}
	text := f.tail
	added := 0
	for _, o := range out {
		b.inflated += int64(len(o))
		text = append(text, o...)
		added += len(o)
	}
	if b.inflated > maxInflatedBody {
		return errInflatesTooFar
	}
	// Each stream's last bytes are read again with what it inflates to next: many streams that each hand on a
	// little at a time would make one body cost minutes.
	if b.looked += int64(len(text)); b.looked > lookedPerByte*(b.took+b.inflated)+maxInflatedAtOnce {
		return errTooMuchToRead
	}
	// Past the depth followed, the streams in it are inflated as they are found.
	inner := f.inner.depth < maxDepth
	budget := b.left()
	err := refusalOf(b.scanner.look(text, true, f.before, !inner, f.depth+1, &budget))
	b.inflated = maxInflatedBody - budget
	if err != nil {
		return err
	}
	if inner { // the streams in it, and in what its base64, hex and escapes decode to
		fresh := text[len(text)-added:]
		if _, err := f.inner.more(b, fresh, false); err != nil {
			return err
		}
		if f.views == nil {
			f.views = newViews(f.inner.depth)
		}
		for _, v := range f.views {
			if err := v.take(b, fresh, false); err != nil {
				return err
			}
		}
	}
	if hold := b.scanner.hold; len(text) > hold {
		f.before.keep(b.scanner, text[:len(text)-hold])
		text = append([]byte{}, text[len(text)-hold:]...)
	}
	f.tail = text
	return nil
}

func (b *scannedBody) stopStreams() {
	b.streams.stop()
	for _, v := range b.views {
		v.streams.stop()
	}
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
