package bundle

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// writeCheckpoint writes a file with a Leafwatch checkpoint's header and
// some bytes after it: the manifest reads the header and hashes the file;
// the weights themselves do not matter here.
func writeCheckpoint(t *testing.T, path string, labels []string, tail string) {
	t.Helper()
	lb, _ := json.Marshal(labels)
	hdr, _ := json.Marshal(map[string]any{"__metadata__": map[string]string{
		"format": "leafwatch-alexnet", "format_version": "1", "variant": "torchvision", "labels": string(lb),
		"input_size": "224", "resize": "256", "mean": "[0.485,0.456,0.406]", "std": "[0.229,0.224,0.225]",
		"created": "2026-12-01T00:00:00Z"}})
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(len(hdr)))
	b.Write(hdr)
	b.WriteString(tail)
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

var labels = []string{"Tomato___Late_blight", "Tomato___healthy", "not_a_leaf"}

func newSigner(t *testing.T, dir, name string) (*Signer, string) {
	t.Helper()
	pub, key, err := GenerateKey(filepath.Join(dir, name), "")
	if err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(key, "")
	if err != nil {
		t.Fatal(err)
	}
	return s, pub
}

func TestSignAndVerify(t *testing.T) {
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "model.safetensors")
	writeCheckpoint(t, ckpt, labels, "weights")
	signer, pub := newSigner(t, dir, "release")
	other, otherPub := newSigner(t, dir, "other")
	ring, err := LoadKeyring([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	m, err := SignCheckpoint(signer, ckpt, "greenhouse 3, December")
	if err != nil {
		t.Fatal(err)
	}
	good, err := ReadBeside(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := good.Verify(ring, false); err != nil || id != signer.ID() {
		t.Fatalf("a good bundle: key %q, %v", id, err)
	}
	if err := good.Manifest.CheckCheckpoint(ckpt); err != nil {
		t.Fatalf("the checkpoint does not match its own manifest: %v", err)
	}
	if m.Summary != "greenhouse 3, December" || m.Version != m.SHA256[:12] || m.LabelsSHA256 != LabelsHash(labels) {
		t.Errorf("manifest %+v", m)
	}

	tamper := func(b []byte, at int) []byte {
		c := bytes.Clone(b)
		c[at] ^= 0x01
		return c
	}
	otherRing, _ := LoadKeyring([]string{otherPub})
	both, _ := LoadKeyring([]string{otherPub, pub})
	otherSig := other.Sign(good.Text, good.Manifest)
	i := bytes.Index(good.Text, []byte(`"Tomato___healthy"`))
	cases := []struct {
		name          string
		s             Signed
		ring          *Keyring
		allowUnsigned bool
		want          error
		says          string
	}{
		{"tampered manifest", Signed{Text: tamper(good.Text, i+3), Sig: good.Sig}, ring, false, ErrUntrusted, "changed after signing"},
		{"tampered signature", Signed{Text: good.Text, Sig: tamperLine(good.Sig, 1)}, ring, false, ErrUntrusted, ""},
		{"tampered trusted comment", Signed{Text: good.Text, Sig: tamperLine(good.Sig, 2)}, ring, false, ErrUntrusted, ""},
		{"wrong key", good, otherRing, false, ErrUntrusted, "not among the trusted keys"},
		{"signed by the other key", Signed{Text: good.Text, Sig: otherSig}, ring, false, ErrUntrusted, other.ID()},
		{"unsigned", Signed{Text: good.Text}, ring, false, ErrUnsigned, ""},
		{"no keys", good, &Keyring{}, false, ErrUntrusted, "no trusted keys"},
		{"garbage signature", Signed{Text: good.Text, Sig: []byte("hello")}, ring, false, ErrUntrusted, "not a minisign signature"},
		// allow_unsigned never lets a bad signature through
		{"unsigned allowed", Signed{Text: good.Text}, ring, true, nil, ""},
		{"tampered, unsigned allowed", Signed{Text: tamper(good.Text, i+3), Sig: good.Sig}, ring, true, ErrUntrusted, ""},
		{"one of two keys", Signed{Text: good.Text, Sig: otherSig}, both, false, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.s.Verify(c.ring, c.allowUnsigned)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if err != nil && !strings.Contains(err.Error(), c.says) {
				t.Errorf("%q does not say %q", err, c.says)
			}
		})
	}
}

// tamperLine changes one character in the middle of a signature file's
// line n (0: untrusted comment, 1: signature, 2: trusted comment, 3: its
// signature).
func tamperLine(sig []byte, n int) []byte {
	lines := strings.Split(string(sig), "\n")
	l := []byte(lines[n])
	k := len(l) / 2
	if l[k] == 'Q' {
		l[k] = 'R'
	} else {
		l[k] = 'Q'
	}
	lines[n] = string(l)
	return []byte(strings.Join(lines, "\n"))
}

func TestCheckpointAgainstManifest(t *testing.T) {
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "model.safetensors")
	writeCheckpoint(t, ckpt, labels, "weights-weights")
	m, err := Describe(ckpt, "")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(ckpt)
	cases := []struct {
		name  string
		write func(path string)
		says  string
	}{
		{"one byte of the weights", func(p string) {
			c := bytes.Clone(data)
			c[len(c)-2] ^= 0x40
			os.WriteFile(p, c, 0o644)
		}, "SHA-256"},
		{"truncated", func(p string) { os.WriteFile(p, data[:len(data)-3], 0o644) }, "bytes; the manifest says"},
		{"other labels, same size", func(p string) {
			writeCheckpoint(t, p, []string{"Tomato___Late_blight", "Tomato___healthy", "not_a_leaZ"}, "weights-weights")
		}, "SHA-256"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.safetensors")
			c.write(p)
			err := m.CheckCheckpoint(p)
			if err == nil || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("got %v, want an error saying %q", err, c.says)
			}
		})
	}
	// A manifest whose labels were edited (and its labels hash with them)
	// no longer matches the checkpoint's header, even with the right hash.
	edited := m
	edited.Labels = []string{"a", "b", "c"}
	edited.LabelsSHA256 = LabelsHash(edited.Labels)
	if err := edited.CheckCheckpoint(ckpt); err == nil || !strings.Contains(err.Error(), "labels differ") {
		t.Errorf("edited labels: %v", err)
	}
}

func TestParseManifestRefuses(t *testing.T) {
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "model.safetensors")
	writeCheckpoint(t, ckpt, labels, "w")
	m, err := Describe(ckpt, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseManifest(m.Marshal()); err != nil {
		t.Fatalf("its own manifest: %v", err)
	}
	edit := func(f func(*Manifest)) []byte { c := m; f(&c); return c.Marshal() }
	cases := map[string][]byte{
		"not JSON":         []byte("hello"),
		"unknown field":    bytes.Replace(m.Marshal(), []byte(`"format"`), []byte(`"extra": 1, "format"`), 1),
		"other format":     edit(func(c *Manifest) { c.Format = "x" }),
		"newer version":    edit(func(c *Manifest) { c.FormatVersion = 2 }),
		"short hash":       edit(func(c *Manifest) { c.SHA256 = "abc" }),
		"version not hash": edit(func(c *Manifest) { c.Version = "0123456789ab" }),
		"labels hash":      edit(func(c *Manifest) { c.Labels = []string{"x"} }),
		"no size":          edit(func(c *Manifest) { c.Size = 0 }),
		"unknown variant":  edit(func(c *Manifest) { c.Variant = "vgg" }),
		"too long":         append(m.Marshal(), bytes.Repeat([]byte(" "), MaxManifest)...),
		"trailing object":  append(m.Marshal(), []byte("{}")...),
		"summary too long": edit(func(c *Manifest) { c.Summary = strings.Repeat("x", 300) }),
		"uppercase sha256": edit(func(c *Manifest) { c.SHA256 = strings.ToUpper(c.SHA256); c.Version = c.SHA256[:12] }),
	}
	for name, b := range cases {
		if _, err := ParseManifest(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestMinisignInterop: a bundle verifies with Debian's minisign, and a
// signature minisign made verifies here — the files are minisign's own.
func TestMinisignInterop(t *testing.T) {
	bin, err := exec.LookPath("minisign")
	if err != nil {
		t.Skip("minisign(1) is not installed (scripts/deps.sh installs it)")
	}
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "model.safetensors")
	writeCheckpoint(t, ckpt, labels, "w")
	signer, pub := newSigner(t, dir, "release")
	if _, err := SignCheckpoint(signer, ckpt, ""); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-V", "-p", pub, "-m", ManifestPath(ckpt)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "leafwatch model") {
		t.Fatalf("minisign -V: %v\n%s", err, out)
	}
	// minisign signs with its own key (unencrypted: -W).
	if out, err := exec.Command(bin, "-G", "-W", "-p", filepath.Join(dir, "m.pub"), "-s", filepath.Join(dir, "m.key")).CombinedOutput(); err != nil {
		t.Fatalf("minisign -G: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "-S", "-s", filepath.Join(dir, "m.key"), "-m", ManifestPath(ckpt), "-t", "by minisign").CombinedOutput(); err != nil {
		t.Fatalf("minisign -S: %v\n%s", err, out)
	}
	ring, err := LoadKeyring([]string{filepath.Join(dir, "m.pub")})
	if err != nil {
		t.Fatal(err)
	}
	s, err := ReadBeside(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	if _, comment, err := ring.Verify(s.Text, s.Sig); err != nil || comment != "by minisign" {
		t.Fatalf("minisign's signature: %q %v", comment, err)
	}
}

func TestKeys(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "release")
	if _, _, err := GenerateKey(base, ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := GenerateKey(base, ""); err == nil || !strings.Contains(err.Error(), "never overwrites") {
		t.Errorf("a second keygen over the same name: %v", err)
	}
	if st, _ := os.Stat(base + ".key"); st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v", st.Mode().Perm())
	}
	os.Chmod(base+".key", 0o644)
	if _, err := LoadSigner(base+".key", ""); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a readable private key: %v", err)
	}
	if _, err := LoadKeyring([]string{base + ".key"}); err == nil {
		t.Error("a private key taken as a public one")
	}
	if _, err := LoadKeyring([]string{filepath.Join(dir, "missing.pub")}); err == nil {
		t.Error("a missing key file accepted")
	}
}
