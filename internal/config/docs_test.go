package config

import (
	"flag"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the README's key reference and the restart-only lists from the key table")

const (
	readme      = "../../README.md"
	designNotes = "../../docs/design-notes.md"
	tableStart  = "<!-- config keys: generated from internal/config/keys.go by go test ./internal/config -update -->\n"
	tableEnd    = "<!-- end of config keys -->\n"
	restartFrom = "<!-- restart-only -->"
	restartTo   = "<!-- /restart-only -->"
)

// keyReference renders the key table as the README's Markdown table.
func keyReference() string {
	var b strings.Builder
	b.WriteString("| key | default | meaning |\n|---|---|---|\n")
	for _, k := range Keys() {
		doc := k.Doc
		if k.Reload == Restart {
			doc += " (restart only)"
		}
		b.WriteString("| `" + k.Name + "` | " + k.Default + " | " + doc + " |\n")
	}
	return b.String()
}

// TestREADMEKeyReference checks that the README's key reference is the
// key table's (-update writes it).
func TestREADMEKeyReference(t *testing.T) {
	data, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	from, to := strings.Index(s, tableStart), strings.Index(s, tableEnd)
	if from < 0 || to < from {
		t.Fatalf("%s: no key reference between %q and %q", readme, tableStart, tableEnd)
	}
	got, want := s[from+len(tableStart):to], keyReference()
	if *update {
		if err := os.WriteFile(readme, []byte(s[:from+len(tableStart)]+want+s[to:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s's key reference is not the key table's; run go test ./internal/config -update (-table +README):\n%s", readme, diff)
	}
}

// restartList renders the restart-only keys as the prose lists hold them,
// wrapped at 72 columns after prefix, the text of the line before the list.
func restartList(prefix string) string {
	indent := prefix[:len(prefix)-len(strings.TrimLeft(prefix, " "))]
	var b strings.Builder
	col := len(prefix)
	first := true
	for _, k := range Keys() {
		if k.Reload != Restart {
			continue
		}
		item := "`" + k.Name + "`"
		if !first {
			b.WriteString(",")
			col++
			if col+1+len(item) > 72 {
				b.WriteString("\n" + indent)
				col = len(indent)
			} else {
				b.WriteString(" ")
				col++
			}
		}
		first = false
		b.WriteString(item)
		col += len(item)
	}
	return b.String()
}

// TestRestartOnlyListsAgree checks every list of restart-only keys in the
// README and the design notes (each between restart-only markers) against
// the key table (-update writes them).
func TestRestartOnlyListsAgree(t *testing.T) {
	var want []string
	for _, k := range Keys() {
		if k.Reload == Restart {
			want = append(want, k.Name)
		}
	}
	slices.Sort(want)
	keyName := regexp.MustCompile("`([a-z]+\\.[a-z_]+)`")
	for _, file := range []string{readme, designNotes} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		s, lists := string(data), 0
		for {
			from := strings.Index(s, restartFrom)
			if from < 0 {
				break
			}
			out.WriteString(s[:from+len(restartFrom)])
			s = s[from+len(restartFrom):]
			to := strings.Index(s, restartTo)
			if to < 0 {
				t.Fatalf("%s: %s without %s", file, restartFrom, restartTo)
			}
			var got []string
			for _, m := range keyName.FindAllStringSubmatch(s[:to], -1) {
				got = append(got, m[1])
			}
			slices.Sort(got)
			if diff := cmp.Diff(want, got); diff != "" && !*update {
				t.Errorf("%s: restart-only list %d is not the key table's; run go test ./internal/config -update (-table +%s):\n%s", file, lists+1, file, diff)
			}
			line := out.String()[strings.LastIndex(out.String(), "\n")+1:]
			out.WriteString(restartList(line))
			lists++
			s = s[to:]
		}
		out.WriteString(s)
		if lists == 0 {
			t.Errorf("%s: no restart-only list (between %s and %s)", file, restartFrom, restartTo)
		}
		if *update {
			if err := os.WriteFile(file, []byte(out.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
