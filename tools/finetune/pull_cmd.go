package main

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/leafwatch/leafwatch/internal/fetch"
	"github.com/leafwatch/leafwatch/internal/fieldset"
)

// pullOptions are finetune pull's settings.
type pullOptions struct {
	device    string // http(s)://host:port of the device's status server
	out       string
	token     string // bearer token, or
	user, pw  string // basic auth
	all       bool   // unlabelled samples too
	maxBytes  int64
	retries   int
	client    *http.Client
	log       *slog.Logger
	retryWait time.Duration
}

func cmdPull(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("pull", flag.ExitOnError)
	var o pullOptions
	fs.StringVar(&o.out, "out", "", "folder to write the export into (replaced if it holds an earlier export)")
	tokenFile := fs.String("token-file", "", "file whose first line is the device's http_auth bearer token")
	basicFile := fs.String("basic-auth-file", "", "file whose first line is user:password of the device's http_auth basic users")
	caFile := fs.String("ca-file", "", "CA certificate (PEM) the device's HTTPS certificate is signed by (default: the system's)")
	fs.BoolVar(&o.all, "all", false, "also the unlabelled samples (for Label Studio); default: what training needs")
	maxMB := fs.Int64("max-mb", 20000, "refuse an export larger than this")
	fs.IntVar(&o.retries, "retries", 5, "times an interrupted download is resumed")
	fs.Parse(args)
	if fs.NArg() != 1 || o.out == "" {
		return errors.New("pull: give the device's address (http://DEVICE:8080) and --out DIR")
	}
	o.device, o.maxBytes, o.log, o.retryWait = fs.Arg(0), *maxMB<<20, log, 2*time.Second
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("pull: --token-file: %w", err)
		}
		o.token = strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
	}
	if *basicFile != "" {
		b, err := os.ReadFile(*basicFile)
		if err != nil {
			return fmt.Errorf("pull: --basic-auth-file: %w", err)
		}
		u, p, ok := strings.Cut(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]), ":")
		if !ok {
			return fmt.Errorf("pull: --basic-auth-file %s: want user:password", *basicFile)
		}
		o.user, o.pw = u, p
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("pull: --ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("pull: --ca-file %s holds no PEM certificate", *caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	o.client = &http.Client{Transport: tr}
	rep, err := pull(ctx, o)
	if err != nil {
		return err
	}
	fmt.Printf("pulled %s into %s: %d records, %d labelled images, checked against SHA256SUMS\n", o.device, o.out, rep.records, rep.images)
	return nil
}

type pullReport struct{ records, images int }

// pull downloads the device's export into out.tar.partial — resuming what
// an earlier, interrupted pull left there while the device's export is
// unchanged (its ETag), starting over when it changed — then unpacks it
// beside out, checks every file against SHA256SUMS and renames it into
// place.
func pull(ctx context.Context, o pullOptions) (pullReport, error) {
	u, err := url.Parse(o.device)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return pullReport{}, fmt.Errorf("pull: %q is not a device address like http://greenhouse1:8080", o.device)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/samples/export"
	if !o.all {
		u.RawQuery = "labelled_only=1"
	}
	partial := strings.TrimSuffix(o.out, "/") + ".tar.partial"
	hdr := http.Header{}
	if o.token != "" {
		hdr.Set("Authorization", "Bearer "+o.token)
	} else if o.user != "" {
		req, _ := http.NewRequest("GET", "/", nil)
		req.SetBasicAuth(o.user, o.pw)
		hdr.Set("Authorization", req.Header.Get("Authorization"))
	}
	err = fetch.Retry(ctx, fetch.Request{URL: u.String(), Partial: partial, Client: o.client, Header: hdr, MaxBytes: o.maxBytes, Log: o.log}, o.retries, o.retryWait)
	var se *fetch.StatusError
	switch {
	case errors.As(err, &se) && (se.Code == http.StatusUnauthorized || se.Code == http.StatusForbidden):
		return pullReport{}, fmt.Errorf("pull: the device refused (%s): %s — give --token-file or --basic-auth-file with its http_auth credentials", se.Status, se.Body)
	case errors.Is(err, fetch.ErrTooLarge):
		return pullReport{}, fmt.Errorf("pull: %w (--max-mb)", err)
	case err != nil:
		return pullReport{}, fmt.Errorf("pull: %w", err)
	}
	rep, err := unpack(partial, o.out)
	if err != nil {
		return rep, err
	}
	fetch.Discard(partial)
	return rep, nil
}

// unpack extracts the archive beside out, checks SHA256SUMS and renames
// the folder into place.
func unpack(archive, out string) (pullReport, error) {
	var rep pullReport
	if st, err := os.Stat(out); err == nil && (!st.IsDir() || (!fieldset.IsExport(out) && !emptyDir(out))) {
		return rep, fmt.Errorf("pull: %s exists and is not an earlier export; choose another --out", out)
	}
	tmp := strings.TrimSuffix(out, "/") + ".unpacking"
	os.RemoveAll(tmp)
	f, err := os.Open(archive)
	if err != nil {
		return rep, err
	}
	defer f.Close()
	tr := tar.NewReader(bufio.NewReader(f))
	got := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			os.RemoveAll(tmp)
			return rep, fmt.Errorf("pull: the archive is damaged: %w", err)
		}
		if h.Typeflag != tar.TypeReg || !filepath.IsLocal(h.Name) {
			os.RemoveAll(tmp)
			return rep, fmt.Errorf("pull: the archive holds %q, not a plain file inside the export", h.Name)
		}
		dst := filepath.Join(tmp, filepath.FromSlash(h.Name))
		os.MkdirAll(filepath.Dir(dst), 0o755)
		w, err := os.Create(dst)
		if err != nil {
			os.RemoveAll(tmp)
			return rep, fmt.Errorf("pull: %w", err)
		}
		hs := sha256.New()
		_, err = io.Copy(io.MultiWriter(w, hs), tr)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.RemoveAll(tmp)
			return rep, fmt.Errorf("pull: %s: %w", h.Name, err)
		}
		got[h.Name] = hex.EncodeToString(hs.Sum(nil))
	}
	if err := checkSums(tmp, got); err != nil {
		os.RemoveAll(tmp)
		return rep, err
	}
	recs, err := fieldset.Load(tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return rep, fmt.Errorf("pull: %w", err)
	}
	rep.records = len(recs)
	for _, r := range recs {
		if r.Image != "" {
			rep.images++
		}
	}
	old := strings.TrimSuffix(out, "/") + ".old"
	os.RemoveAll(old)
	if _, err := os.Stat(out); err == nil {
		if err := os.Rename(out, old); err != nil {
			return rep, fmt.Errorf("pull: %w", err)
		}
	}
	if err := os.Rename(tmp, out); err != nil {
		return rep, fmt.Errorf("pull: %w", err)
	}
	os.RemoveAll(old)
	return rep, nil
}

// checkSums compares the files unpacked with SHA256SUMS: each listed file
// present with its hash, nothing unlisted.
func checkSums(dir string, got map[string]string) error {
	b, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		return errors.New("pull: the archive has no SHA256SUMS: not a Leafwatch export")
	}
	listed := 0
	for n, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			return fmt.Errorf("pull: SHA256SUMS line %d is malformed", n+1)
		}
		if got[name] != sum {
			return fmt.Errorf("pull: %s does not match SHA256SUMS (damaged or changed in transit)", name)
		}
		listed++
	}
	if listed != len(got)-1 {
		return fmt.Errorf("pull: the archive holds %d files, SHA256SUMS lists %d", len(got)-1, listed)
	}
	return nil
}

func emptyDir(dir string) bool {
	des, err := os.ReadDir(dir)
	return err == nil && len(des) == 0
}
