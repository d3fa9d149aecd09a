package main

import "testing"

// Whatever a bottle sends, reading it never panics (a panic in a body's read would end the gate).
func FuzzFound(f *testing.F) {
	for _, seed := range []string{"%", "%u12", "\\u{", "\\u{110000}", "&#", "&#x;", "&#99999999;", "\\U0011FFFF",
		"\xff\xfe%e2%80", "０ｘ", "0x", testSecret, "\\x4", "&amp"} {
		f.Add([]byte(seed))
	}
	s := newSecretScanner([]string{testSecret, slashSecret, "0123456789012345"})
	f.Fuzz(func(t *testing.T, text []byte) {
		s.found(text, true, carried{letters: text, hexDigits: text})
	})
}
