package main

import (
	"sync"
	"time"
)

// A hijacked agent can send a secret in pieces, one per request, in any order and with other requests between
// them; pipelock joins only the fragments of consecutive requests, in order. pieces remembers, for each secret
// (its letters and digits), which of its characters the bottle's requests have sent as part of a piece, and
// when: a piece as it is or encoded (found in the scanner's views, hex and base64 decoded each on its own). A request is refused, before any of it goes on, if with it fewer of a secret's characters
// than make a piece would be left unsent within the window (the rest could follow in one piece too short to
// see). A piece is a run of the secret long enough that ordinary text in the secret's alphabet matches it by
// chance less than once in two billion tries: six letters or digits, eight for a secret of hex digits only.
// Shorter pieces cannot be told from chance, and a secret of decimal digits only is not counted in pieces (it
// would take pieces of ten, longer than an index reads). What the gate does not
// read (pipelock's passthrough hosts, the credential hosts) is not counted.
type pieces struct {
	mu      sync.Mutex
	window  time.Duration
	now     func() time.Time
	secrets []tracked
	indexes []*index // one per piece length
}

type tracked struct {
	piece int
	sent  []time.Time // when each character last went out as part of a piece
}

// pieceAt is a piece found in a text: secret's characters [at, at+n).
type pieceAt struct{ secret, at, n int }

const piecesWindow = time.Hour

func newPieces() *pieces {
	return &pieces{window: piecesWindow, now: time.Now}
}

// pieceLength is the shortest run of form that counts as a piece.
func pieceLength(form []byte) int {
	alphabet := 10
	for _, c := range form {
		if !hexClass[c] {
			alphabet = 36
		} else if c > '9' && alphabet < 16 {
			alphabet = 16
		}
	}
	n, chances := 0, 1 // the first n with alphabet^n >= 2^31
	for chances < 1<<31 {
		chances *= alphabet
		n++
	}
	return n
}

// track remembers a secret by its letters and digits in lower case (`in` is given text in those alone).
func (p *pieces) track(form []byte) {
	n := pieceLength(form)
	if n > 8 || len(form) < 2*n {
		// A secret of decimal digits only would need pieces longer than the longest key an index reads
		// (ordinary numbers match eight digits of it far too often), and a short one cannot come in two
		// pieces that count.
		return
	}
	var x *index
	for _, each := range p.indexes {
		if each.k == n {
			x = each
		}
	}
	if x == nil {
		x = newIndex(n)
		p.indexes = append(p.indexes, x)
	}
	p.secrets = append(p.secrets, tracked{piece: n, sent: make([]time.Time, len(form))})
	for at := 0; at+n <= len(form); at++ {
		// A piece may be sent reversed: it is the same characters of the secret.
		x.put(keyOf(form[at:at+n]), entry{form: len(p.secrets) - 1, at: at})
		if back := keyOf(reversed(form[at : at+n])); back != keyOf(form[at:at+n]) {
			x.put(back, entry{form: len(p.secrets) - 1, at: at})
		}
	}
}

// in appends to found the pieces of secrets in text, letters and digits in lower case.
func (p *pieces) in(text []byte, found []pieceAt) []pieceAt {
	for _, x := range p.indexes {
		n := x.k
		x.each(text, func(at int, e entry) bool {
			found = append(found, pieceAt{e.form, e.at, n})
			return false
		})
	}
	return found
}

// add records pieces as sent now, and says whether some secret has now been sent whole within the window.
func (p *pieces) add(found []pieceAt) bool {
	if len(found) == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	touched := map[int]bool{}
	for _, f := range found {
		for i := f.at; i < f.at+f.n; i++ {
			p.secrets[f.secret].sent[i] = now
		}
		touched[f.secret] = true
	}
	for id := range touched {
		unsent := 0
		for _, t := range p.secrets[id].sent {
			if t.IsZero() || now.Sub(t) > p.window {
				unsent++
			}
		}
		if unsent < p.secrets[id].piece {
			// Forgotten once refused: a false alarm (ordinary traffic that happened to hold pieces of a secret)
			// does not refuse every request with a piece of it for the rest of the window. An agent gains
			// nothing by it: sending the pieces again ends in the same refusal.
			for i := range p.secrets[id].sent {
				p.secrets[id].sent[i] = time.Time{}
			}
			return true
		}
	}
	return false
}
