package main

import (
	"bytes"
	"encoding/base32"
	"encoding/hex"
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

// secretScanner finds the bottle's secrets, in the forms pipelock's secrets file lists and the hex and base32
// pipelock derives itself, in any case (a header name reaches the scanner lower-cased, and a false alarm
// needs a long random value in another case).
type secretScanner struct {
	forms   [][]byte // lower case
	longest int
}

func newSecretScanner(secrets []string) *secretScanner {
	s := &secretScanner{}
	seen := map[string]bool{}
	add := func(form string) {
		form = strings.ToLower(form)
		if form == "" || seen[form] {
			return
		}
		seen[form] = true
		s.forms = append(s.forms, []byte(form))
		if len(form) > s.longest {
			s.longest = len(form)
		}
	}
	for _, secret := range secrets {
		add(secret)
		add(hex.EncodeToString([]byte(secret)))
		add(strings.TrimRight(base32.StdEncoding.EncodeToString([]byte(secret)), "="))
	}
	return s
}

// in says whether any secret is in text.
func (s *secretScanner) in(text []byte) bool {
	if len(s.forms) == 0 {
		return false
	}
	lower := bytes.ToLower(text)
	for _, form := range s.forms {
		if bytes.Contains(lower, form) {
			return true
		}
	}
	return false
}

// refusedRequest says why the gate will not forward r ("" if it may): its method, or a secret in its
// method, target or headers. The body is read as it goes (scannedBody).
func (s *secretScanner) refusedRequest(r *http.Request) string {
	if !allowedMethods[r.Method] {
		// Not named: it may be the secret.
		return "the request's method is not one the sidecar forwards (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)"
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
	if s.in(head.Bytes()) {
		return "the request carries a secret of the bottle's (in its method, target or headers)"
	}
	return ""
}

// scannedBody passes a request body on as it is read, keeping back the last bytes that could begin a
// secret until what follows them has been read: a secret is refused before any of it has been passed on.
type scannedBody struct {
	src     io.ReadCloser
	scanner *secretScanner
	kept    []byte // read and scanned, not yet passed on
	ready   []byte // scanned and free to pass on
	err     error  // from src, once kept is passed on
	chunk   []byte
}

// errSecretInBody ends a request whose body carries a secret; the reverse proxy answers 403 for it.
var errSecretInBody = refusal("the request body carries a secret of the bottle's")

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
		window := append(b.kept, b.chunk[:n]...)
		if b.scanner.in(window) {
			b.kept, b.ready = nil, nil
			b.err = errSecretInBody
			return 0, errSecretInBody
		}
		hold := b.scanner.longest - 1
		if hold < 0 {
			hold = 0
		}
		if len(window) > hold {
			b.ready, b.kept = window[:len(window)-hold], append([]byte{}, window[len(window)-hold:]...)
		} else {
			b.kept = window
		}
		if err != nil {
			b.err = err
		}
	}
	n := copy(p, b.ready)
	b.ready = b.ready[n:]
	return n, nil
}

func (b *scannedBody) Close() error { return b.src.Close() }
