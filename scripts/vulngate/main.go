// Command vulngate reads govulncheck's JSON output (-format json) on
// standard input and fails when the code reaches a vulnerability that the
// accept file does not accept with a reason. scripts/vulncheck.sh runs it;
// `make test` fails through it.
//
//	govulncheck -format json ./... | vulngate -accept scripts/govulncheck.accept
//
// The accept file holds one "ID reason…" per line ('#' starts a comment);
// an entry without a reason is refused, and entries that match nothing are
// reported so they do not outlive their finding.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// message is one object of govulncheck's JSON stream (protocol v1).
type message struct {
	Config *struct {
		ScannerVersion string `json:"scanner_version"`
		GoVersion      string `json:"go_version"`
	} `json:"config"`
	OSV *struct {
		ID      string `json:"id"`
		Summary string `json:"summary"`
	} `json:"osv"`
	Finding *struct {
		OSV          string  `json:"osv"`
		FixedVersion string  `json:"fixed_version"`
		Trace        []frame `json:"trace"`
	} `json:"finding"`
}

type frame struct {
	Module   string `json:"module"`
	Version  string `json:"version"`
	Package  string `json:"package"`
	Function string `json:"function"`
	Receiver string `json:"receiver"`
	Position *struct {
		Filename string `json:"filename"`
		Line     int    `json:"line"`
	} `json:"position"`
}

// reachable is a vulnerability the code calls: the first frame of a
// finding's trace names the vulnerable function (symbol level); findings
// at package or module level only say the code imports or requires it.
type reachable struct {
	id, summary, module, found, fixed string
	example                           string
}

func main() {
	acceptFile := flag.String("accept", "", "file of accepted findings: ID and a reason per line")
	flag.Parse()
	accepted, err := readAccept(*acceptFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulngate:", err)
		os.Exit(2)
	}
	found, goVersion, err := scan(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulngate:", err)
		os.Exit(2)
	}
	os.Exit(report(os.Stdout, found, accepted, goVersion))
}

func readAccept(path string) (map[string]string, error) {
	out := map[string]string{}
	if path == "" {
		return out, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		id, reason, _ := strings.Cut(strings.TrimSpace(line), " ")
		if id == "" {
			continue
		}
		if strings.TrimSpace(reason) == "" {
			return nil, fmt.Errorf("%s line %d: %s is accepted without a reason", path, n, id)
		}
		out[id] = strings.TrimSpace(reason)
	}
	return out, sc.Err()
}

func scan(r io.Reader) (map[string]*reachable, string, error) {
	dec := json.NewDecoder(r)
	found := map[string]*reachable{}
	summaries := map[string]string{}
	goVersion := ""
	sawConfig := false
	for {
		var m message
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, "", fmt.Errorf("reading govulncheck's JSON: %w", err)
		}
		switch {
		case m.Config != nil:
			sawConfig, goVersion = true, m.Config.GoVersion
		case m.OSV != nil:
			summaries[m.OSV.ID] = m.OSV.Summary
		case m.Finding != nil && len(m.Finding.Trace) > 0 && m.Finding.Trace[0].Function != "":
			f := m.Finding
			if _, ok := found[f.OSV]; ok {
				continue
			}
			vuln := f.Trace[0]
			found[f.OSV] = &reachable{id: f.OSV, module: vuln.Module, found: vuln.Version, fixed: f.FixedVersion, example: describe(f.Trace)}
		}
	}
	if !sawConfig {
		return nil, "", errors.New("no govulncheck output (did it run?)")
	}
	for id, r := range found {
		r.summary = summaries[id]
	}
	return found, goVersion, nil
}

// describe names the caller in our code and the vulnerable function.
func describe(trace []frame) string {
	vuln := trace[0]
	callee := vuln.Package + "." + vuln.Function
	if vuln.Receiver != "" {
		callee = vuln.Package + "." + strings.TrimPrefix(vuln.Receiver, "*") + "." + vuln.Function
	}
	entry := trace[len(trace)-1]
	where := entry.Package + "." + entry.Function
	if entry.Position != nil {
		where = fmt.Sprintf("%s:%d (%s)", entry.Position.Filename, entry.Position.Line, where)
	}
	return where + " → … → " + callee
}

func report(w io.Writer, found map[string]*reachable, accepted map[string]string, goVersion string) int {
	ids := make([]string, 0, len(found))
	for id := range found {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	open := 0
	for _, id := range ids {
		r := found[id]
		if reason, ok := accepted[id]; ok {
			fmt.Fprintf(w, "accepted  %s %s@%s: %s (reason: %s)\n", id, r.module, r.found, r.summary, reason)
			continue
		}
		open++
		fmt.Fprintf(w, "REACHABLE %s %s@%s, fixed in %s: %s\n          %s\n", id, r.module, r.found, r.fixed, r.summary, r.example)
	}
	for id := range accepted {
		if found[id] == nil {
			fmt.Fprintf(w, "note: the accepted %s no longer matches a finding; remove it from the accept file\n", id)
		}
	}
	fmt.Fprintf(w, "govulncheck (%s): %d reachable vulnerabilities, %d accepted, %d open\n", goVersion, len(found), len(found)-open, open)
	if open > 0 {
		fmt.Fprintln(w, "raise the module (go get MODULE@FIXED) or the Go toolchain (go.mod's go line); accept a finding only with a reason (scripts/govulncheck.accept)")
		return 1
	}
	return 0
}
