package pki

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Sentinel causes of a [PasswordError], for errors.Is.
var (
	// ErrEmptyPassword: the password file's first line is empty.
	ErrEmptyPassword = errors.New("empty first line (the password goes there)")
	// ErrNoPassword: no file was named and the environment variable is
	// not set (or no variable was named either).
	ErrNoPassword = errors.New("no password")
)

// PasswordError is the error ReadPassword returns: where it looked and
// why it found no password. Callers that name their own flags or config
// keys in messages pick Err out with errors.Is or errors.As.
type PasswordError struct {
	// File is the password file, or "" when the environment was read.
	File string
	// Env is the environment variable, or "" when the file was read.
	Env string
	// Err is ErrEmptyPassword, ErrNoPassword or the error reading File.
	Err error
}

// Error says where ReadPassword looked and what failed.
func (e *PasswordError) Error() string {
	if e.File != "" {
		return fmt.Sprintf("password file %s: %v", e.File, e.Err)
	}
	if e.Env != "" {
		return fmt.Sprintf("environment variable %s: %v", e.Env, e.Err)
	}
	return e.Err.Error()
}

// Unwrap returns Err.
func (e *PasswordError) Unwrap() error { return e.Err }

// ReadPassword returns a bundle password: the first line of file (without
// its "\n" or "\r\n") when file is not "", else the value of the
// environment variable envName. A file whose first line is empty is an
// error; a variable that is set to "" gives the empty password. Errors are
// a *PasswordError.
func ReadPassword(file, envName string) (string, error) {
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return "", &PasswordError{File: file, Err: err}
		}
		line, _, _ := strings.Cut(string(data), "\n")
		if line = strings.TrimSuffix(line, "\r"); line == "" {
			return "", &PasswordError{File: file, Err: ErrEmptyPassword}
		}
		return line, nil
	}
	if envName != "" {
		if pw, ok := os.LookupEnv(envName); ok {
			return pw, nil
		}
	}
	return "", &PasswordError{Env: envName, Err: ErrNoPassword}
}
