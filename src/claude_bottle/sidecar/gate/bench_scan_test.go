package main

import (
	"math/rand"
	"testing"
)

func BenchmarkScannedBody(b *testing.B) {
	random := rand.New(rand.NewSource(1))
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ {}\":,%\\&"
	body := make([]byte, 8<<20)
	for i := range body {
		body[i] = alphabet[random.Intn(len(alphabet))]
	}
	secrets := []string{testSecret, slashSecret, "0123456789abcdef0123456789abcdef01234567"}
	b.SetBytes(int64(len(body)))
	for i := 0; i < b.N; i++ {
		if _, err := drain(&scannedBody{src: chunked(string(body), 32<<10), scanner: newSecretScanner(secrets)}, 32<<10); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkScannedJSONBody(b *testing.B) {
	record := `{"id": 1234567, "name": "package-name", "version": "1.2.3", "description": "Some ordinary text here.", "sha": "3b18e512dba79e4c8300dd08aeb37f8e728b8dad"},` + "\n"
	body := make([]byte, 0, 8<<20)
	for len(body) < 8<<20 {
		body = append(body, record...)
	}
	secrets := []string{testSecret, slashSecret, "0123456789abcdef0123456789abcdef01234567"}
	b.SetBytes(int64(len(body)))
	for i := 0; i < b.N; i++ {
		if _, err := drain(&scannedBody{src: chunked(string(body), 32<<10), scanner: newSecretScanner(secrets)}, 32<<10); err != nil {
			b.Fatal(err)
		}
	}
}
