package yamlsyntax

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLocate(t *testing.T) {
	section := "server:\n  pkcs12: a\n  password_file: b\ngate:\n  queue: 101\n  protect: [tcp/2000]\n"
	tests := []struct {
		name string
		give string
		want *Error // nil: no syntax error
	}{
		{name: "good", give: section, want: nil},
		{name: "key indented too far", give: section + "   policy: drop\n", want: &Error{Line: 7, Column: 4}},
		{name: "key indented too little", give: section + " policy: drop\n", want: &Error{Line: 7, Column: 2}},
		{name: "no colon", give: section + "  open_duration 15s\n", want: &Error{Line: 7, Column: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Locate([]byte(tt.give))
			if got != nil && got.Msg == "" {
				t.Errorf("Locate: %+v, without a message", got)
			}
			if got != nil {
				got = &Error{Line: got.Line, Column: got.Column}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Locate (-want +got):\n%s", diff)
			}
		})
	}
}
