package bundle

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"aead.dev/minisign"
)

// Keyring is the public keys a device trusts.
type Keyring struct {
	keys  []minisign.PublicKey
	files []string // where each came from, for messages
}

// LoadKeyring reads minisign public key files (the .pub that `finetune
// keygen` or `minisign -G` writes).
func LoadKeyring(paths []string) (*Keyring, error) {
	k := &Keyring{}
	for _, p := range paths {
		pub, err := minisign.PublicKeyFromFile(p)
		if err != nil {
			return nil, fmt.Errorf("trusted key %s: not a minisign public key: %w", p, err)
		}
		k.keys = append(k.keys, pub)
		k.files = append(k.files, p)
	}
	return k, nil
}

// Len is how many keys the ring holds.
func (k *Keyring) Len() int {
	if k == nil {
		return 0
	}
	return len(k.keys)
}

// IDs are the keys' minisign ids, as minisign prints them.
func (k *Keyring) IDs() []string {
	var out []string
	for _, p := range k.keys {
		out = append(out, keyID(p.ID()))
	}
	return out
}

func keyID(id uint64) string { return strings.ToUpper(strconv.FormatUint(id, 16)) }

// ErrUnsigned is wrapped when a manifest comes without a signature.
var ErrUnsigned = errors.New("the manifest is not signed")

// ErrUntrusted is wrapped when a signature is not from a trusted key or
// does not match what it signs.
var ErrUntrusted = errors.New("signature not accepted")

// Verify checks that sig is a minisign signature of manifest by one of the
// ring's keys. It returns the key's id and the signature's trusted comment.
func (k *Keyring) Verify(manifest, sig []byte) (keyIDHex, comment string, err error) {
	if len(bytes.TrimSpace(sig)) == 0 {
		return "", "", ErrUnsigned
	}
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil {
		return "", "", fmt.Errorf("%w: not a minisign signature: %v", ErrUntrusted, err)
	}
	if k.Len() == 0 {
		return "", "", fmt.Errorf("%w: no trusted keys are configured (models.trusted_keys)", ErrUntrusted)
	}
	for i, pub := range k.keys {
		if pub.ID() != s.KeyID {
			continue
		}
		if !minisign.Verify(pub, manifest, sig) {
			return "", "", fmt.Errorf("%w: the signature by key %s (%s) does not match the manifest: it was changed after signing", ErrUntrusted, keyID(pub.ID()), k.files[i])
		}
		return keyID(pub.ID()), s.TrustedComment, nil
	}
	return "", "", fmt.Errorf("%w: signed by key %s, which is not among the trusted keys (%s)", ErrUntrusted, keyID(s.KeyID), strings.Join(k.IDs(), ", "))
}

// Signer signs manifests with a private key. It never prints the key.
type Signer struct{ key minisign.PrivateKey }

// LoadSigner reads a minisign private key file; an encrypted one needs its
// password (minisign's scrypt: a second and ~1 GB of memory to open).
func LoadSigner(path, password string) (*Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	if bytes.Contains(b, []byte("minisign public key")) {
		return nil, fmt.Errorf("private key %s: not a minisign private key but a public one (sign with the .key file)", path)
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("private key %s can be read by others (mode %v): chmod 600 it", path, st.Mode().Perm())
	}
	var key minisign.PrivateKey
	if minisign.IsEncrypted(b) {
		if password == "" {
			return nil, fmt.Errorf("private key %s is encrypted: give its password (--password-file or LEAFWATCH_SIGN_PASSWORD)", path)
		}
		if key, err = minisign.DecryptKey(password, b); err != nil {
			return nil, fmt.Errorf("private key %s: wrong password or damaged file", path)
		}
	} else if err := key.UnmarshalText(b); err != nil {
		return nil, fmt.Errorf("private key %s: not a minisign private key", path)
	}
	return &Signer{key: key}, nil
}

// ID is the key's minisign id.
func (s *Signer) ID() string { return keyID(s.key.ID()) }

// Sign returns a minisign signature (prehashed, as minisign 0.10 and later
// write by default) of manifest, whose trusted comment names the model.
func (s *Signer) Sign(manifest []byte, m Manifest) []byte {
	r := minisign.NewReader(bytes.NewReader(manifest))
	io.Copy(io.Discard, r) // a bytes.Reader does not fail
	comment := fmt.Sprintf("leafwatch model %s sha256:%s file:%s", m.Version, m.SHA256, m.File)
	return r.SignWithComments(s.key, comment, "signature from leafwatch key "+s.ID())
}

// GenerateKey writes a new key pair: base.key (private, mode 0600; encrypted
// when password is not empty) and base.pub. Existing files are never
// overwritten.
func GenerateKey(base, password string) (pubPath, keyPath string, err error) {
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", err
	}
	var keyText []byte
	if password != "" {
		keyText, err = minisign.EncryptKey(password, priv)
	} else {
		keyText, err = priv.MarshalText()
	}
	if err != nil {
		return "", "", err
	}
	pubText, err := pub.MarshalText()
	if err != nil {
		return "", "", err
	}
	keyPath, pubPath = base+".key", base+".pub"
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Stat(p); err == nil {
			return "", "", fmt.Errorf("%s exists: keygen never overwrites a key", p)
		}
	}
	f, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", "", err
	}
	_, err = f.Write(append(keyText, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(keyPath)
		return "", "", err
	}
	if err := os.WriteFile(pubPath, append(pubText, '\n'), 0o644); err != nil {
		os.Remove(keyPath)
		return "", "", err
	}
	return pubPath, keyPath, nil
}
