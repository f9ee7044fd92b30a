// Package yamlsyntax places a YAML syntax error where it is. sknockd reads
// its configuration with go.yaml.in/yaml/v3, whose node tree every key's
// check is built on; but yaml.v3 reports some syntax errors at the line
// where the enclosing block starts (a mis-indented key deep in a section
// is blamed on the section's first line). goccy/go-yaml's parser reports
// the token at fault, so a file yaml.v3 refuses is read again with it, to
// say where. A good file never reaches it.
package yamlsyntax

import (
	"errors"

	goccy "github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/parser"
)

// Error is a syntax error at a line and column (both from 1).
type Error struct {
	Line, Column int
	Msg          string
}

// Locate parses data and returns its first syntax error, or nil when the
// parser finds none (then the caller's own error stands).
func Locate(data []byte) *Error {
	_, err := parser.ParseBytes(data, 0)
	var syntax *goccy.SyntaxError
	if !errors.As(err, &syntax) {
		return nil
	}
	tok := syntax.GetToken()
	if tok == nil || tok.Position == nil {
		return nil
	}
	return &Error{Line: tok.Position.Line, Column: tok.Position.Column, Msg: syntax.GetMessage()}
}
