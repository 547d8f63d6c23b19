//go:build !race

package bundle

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// This file stays out of the race run (make test runs it on its own):
// scrypt at minisign's cost takes over a minute under the race detector.

// TestEncryptedKey: a password-protected key (minisign's scrypt, ~1 GB)
// needs its password, and the error never shows the key.
func TestEncryptedKey(t *testing.T) {
	if testing.Short() {
		t.Skip("scrypt with 1 GB")
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "release")
	if _, _, err := GenerateKey(base, "correct horse"); err != nil {
		t.Fatal(err)
	}
	key, _ := os.ReadFile(base + ".key")
	if _, err := LoadSigner(base+".key", ""); err == nil || !strings.Contains(err.Error(), "encrypted") {
		t.Errorf("no password: %v", err)
	}
	_, err := LoadSigner(base+".key", "wrong")
	if err == nil || strings.Contains(err.Error(), strings.TrimSpace(string(key))[60:80]) {
		t.Errorf("wrong password: %v", err)
	}
	if _, err := LoadSigner(base+".key", "correct horse"); err != nil {
		t.Errorf("right password: %v", err)
	}
}
