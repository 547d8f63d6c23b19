package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/leafwatch/leafwatch/internal/bundle"
)

// passwordFrom reads a key's password from --password-file or the
// LEAFWATCH_SIGN_PASSWORD environment variable (never a flag: flags show
// in ps and shell history).
func passwordFrom(file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--password-file: %w", err)
		}
		return strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r"), nil
	}
	return os.Getenv("LEAFWATCH_SIGN_PASSWORD"), nil
}

func cmdKeygen(args []string) error {
	fs := flag.NewFlagSet("keygen", flag.ExitOnError)
	pwFile := fs.String("password-file", "", "encrypt the private key with the password on this file's first line (or set LEAFWATCH_SIGN_PASSWORD); without one the key is stored unencrypted, mode 0600")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "Usage: finetune keygen [--password-file F] NAME\n\nWrites NAME.key (private: keep it on the training machine) and NAME.pub (copy it to every device, models.trusted_keys).")
		fs.PrintDefaults()
	}
	fs.Parse(args)
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("keygen: give the key's name, e.g. finetune keygen /root/leafwatch-release")
	}
	pw, err := passwordFrom(*pwFile)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	pub, key, err := bundle.GenerateKey(fs.Arg(0), pw)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	enc := "unencrypted (mode 0600)"
	if pw != "" {
		enc = "encrypted with the password"
	}
	fmt.Printf("private key: %s, %s — keep it off the devices and out of backups others read\npublic key:  %s — install it on every device and list it in models.trusted_keys\n", key, enc, pub)
	return nil
}

func cmdSign(args []string) error {
	fs := flag.NewFlagSet("sign", flag.ExitOnError)
	keyPath := fs.String("key", "", "private key (finetune keygen or minisign -G)")
	pwFile := fs.String("password-file", "", "the key's password on this file's first line (or LEAFWATCH_SIGN_PASSWORD)")
	summary := fs.String("summary", "", "one line for people (at most 255 characters): Home Assistant shows it as the update's release summary")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "Usage: finetune sign --key NAME.key [--summary TEXT] CHECKPOINT\n\nWrites CHECKPOINT.manifest.json (hash, size, classes, training figures) and its signature CHECKPOINT.manifest.json.minisig beside the checkpoint.")
		fs.PrintDefaults()
	}
	fs.Parse(args)
	if fs.NArg() != 1 || *keyPath == "" {
		fs.Usage()
		return errors.New("sign: give --key and one checkpoint")
	}
	pw, err := passwordFrom(*pwFile)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	s, err := bundle.LoadSigner(*keyPath, pw)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	m, err := bundle.SignCheckpoint(s, fs.Arg(0), *summary)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	fmt.Printf("signed model %s (%d classes, %d MB) with key %s:\n  %s\n  %s\n", m.Version, len(m.Labels), m.Size>>20, s.ID(),
		bundle.ManifestPath(fs.Arg(0)), bundle.SignaturePath(fs.Arg(0)))
	return nil
}
