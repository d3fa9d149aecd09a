package main

import "bytes"

// index finds many forms in a text in one pass: each form is keyed by its first k bytes, read with a rolling
// key, and a bit per hash of the key skips the positions no form can start at, which are nearly all of them.
type index struct {
	k      int
	forms  [][]byte
	starts map[uint64][]entry
	filter [1 << 10]uint64
}

// entry is a form (its number), or, in a piece index, one of a form's pieces: its form and where it starts.
type entry struct{ form, at int }

func newIndex(k int) *index { return &index{k: k, starts: map[uint64][]entry{}} }

func keyOf(b []byte) uint64 {
	var key uint64
	for _, c := range b {
		key = key<<8 | uint64(c)
	}
	return key
}

func filterBit(key uint64) (int, uint64) {
	h := (key * 0x9E3779B97F4A7C15) >> 48
	return int(h >> 6), 1 << (h & 63)
}

func (x *index) put(key uint64, e entry) {
	word, bit := filterBit(key)
	x.filter[word] |= bit
	x.starts[key] = append(x.starts[key], e)
}

// addForm adds a form at least k bytes long, to be found whole (has).
func (x *index) addForm(form []byte) {
	if len(form) < x.k {
		return
	}
	x.forms = append(x.forms, form)
	x.put(keyOf(form[:x.k]), entry{form: len(x.forms) - 1})
}

// each calls visit with every entry whose key is at text[at:at+k], until visit returns true.
func (x *index) each(text []byte, visit func(at int, e entry) bool) bool {
	if len(x.starts) == 0 {
		return false
	}
	mask := ^uint64(0)
	if x.k < 8 {
		mask = 1<<(8*uint(x.k)) - 1
	}
	var key uint64
	for i, c := range text {
		key = (key<<8 | uint64(c)) & mask
		if i+1 < x.k {
			continue
		}
		if word, bit := filterBit(key); x.filter[word]&bit == 0 {
			continue
		}
		for _, e := range x.starts[key] {
			if visit(i+1-x.k, e) {
				return true
			}
		}
	}
	return false
}

// has says whether a form added with addForm is in text.
func (x *index) has(text []byte) bool {
	return x.each(text, func(at int, e entry) bool { return bytes.HasPrefix(text[at:], x.forms[e.form]) })
}
