package trustload

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sknock/gate"
	"sknock/pki"
)

const password = "portknocking"

// newCA makes a CA in a temporary directory with a server bundle
// "gatekeeper" and an empty CRL, and returns the directory.
func newCA(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, err := range []error{
		pki.InitCA(dir, 0),
		pki.IssueServer(dir, "gatekeeper", password, pki.IssueOptions{}),
		pki.WriteCRL(dir, 0),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoad(t *testing.T) {
	dir := newCA(t)
	other := newCA(t) // a second CA: its CRL and certificate do not belong
	bundle := filepath.Join(dir, "gatekeeper.pfx")
	tests := []struct {
		name      string
		bundle    string
		password  string
		ca        string
		crl       string
		wantInput Input  // 0: no error
		wantErr   string // in the error text
		wantIs    error
	}{
		{name: "bundle CAs and CRL", bundle: bundle, password: password, crl: filepath.Join(dir, pki.CRLFile)},
		{name: "CA file and no CRL", bundle: bundle, password: password, ca: filepath.Join(dir, pki.CACertFile)},
		{name: "missing bundle", bundle: filepath.Join(dir, "nobody.pfx"), password: password,
			wantInput: Bundle, wantErr: "load bundle " + filepath.Join(dir, "nobody.pfx"), wantIs: fs.ErrNotExist},
		{name: "wrong password", bundle: bundle, password: "nope", wantInput: Bundle, wantErr: bundle, wantIs: pki.ErrPassword},
		{name: "missing CA file", bundle: bundle, password: password, ca: filepath.Join(dir, "nope.pem"),
			wantInput: CA, wantErr: filepath.Join(dir, "nope.pem"), wantIs: fs.ErrNotExist},
		{name: "missing CRL", bundle: bundle, password: password, crl: filepath.Join(dir, "nope.crl"),
			wantInput: CRL, wantErr: "load CRL " + filepath.Join(dir, "nope.crl"), wantIs: fs.ErrNotExist},
		{name: "CRL of another CA", bundle: bundle, password: password, crl: filepath.Join(other, pki.CRLFile),
			wantInput: CRL, wantErr: "load CRL " + filepath.Join(other, pki.CRLFile)},
		{name: "CRL checked against the CA file", bundle: bundle, password: password,
			ca: filepath.Join(other, pki.CACertFile), crl: filepath.Join(dir, pki.CRLFile),
			wantInput: CRL, wantErr: "load CRL " + filepath.Join(dir, pki.CRLFile)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certs, err := LoadCerts(tt.bundle, tt.password, tt.ca)
			if err == nil {
				var trust *gate.Trust
				var crl *pki.CRL
				trust, crl, err = certs.Trust(tt.crl, 7*time.Second)
				if err == nil {
					if trust == nil || (tt.crl != "") != (crl != nil) {
						t.Fatalf("Trust = %v, CRL %v; want a trust state and a CRL when one is named", trust, crl)
					}
				}
			}
			if tt.wantInput == 0 {
				if err != nil {
					t.Fatalf("err = %v, want none", err)
				}
				return
			}
			var le *Error
			if !errors.As(err, &le) || le.Input != tt.wantInput {
				t.Fatalf("err = %#v, want a *Error for input %d", err, tt.wantInput)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not name %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
		})
	}
}

func TestLoadCertsPicksTheCAFile(t *testing.T) {
	dir, other := newCA(t), newCA(t)
	bundle := filepath.Join(dir, "gatekeeper.pfx")
	inBundle, err := LoadCerts(bundle, password, "")
	if err != nil {
		t.Fatal(err)
	}
	fromFile, err := LoadCerts(bundle, password, filepath.Join(other, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(inBundle.CAs) != 1 || len(fromFile.CAs) != 1 || inBundle.CAs[0].Equal(fromFile.CAs[0]) {
		t.Errorf("bundle CAs %d, file CAs %d: want one each, and the file's to replace the bundle's", len(inBundle.CAs), len(fromFile.CAs))
	}
	if inBundle.BundlePath != bundle {
		t.Errorf("BundlePath = %q, want %q", inBundle.BundlePath, bundle)
	}
}

func TestTrustWithoutCAs(t *testing.T) {
	dir := newCA(t)
	bundle := filepath.Join(dir, "gatekeeper.pfx")
	certs, err := LoadCerts(bundle, password, "")
	if err != nil {
		t.Fatal(err)
	}
	certs.CAs = nil // a bundle shipped without its CA
	_, _, err = certs.Trust("", time.Second)
	var le *Error
	if !errors.As(err, &le) || le.Input != Bundle || !strings.HasPrefix(err.Error(), bundle+": ") {
		t.Errorf("err = %v, want a Bundle error starting with %q", err, bundle+": ")
	}
}

func TestErrorText(t *testing.T) {
	cause := os.ErrPermission
	err := &Error{Input: CA, Err: cause}
	if err.Error() != cause.Error() || !errors.Is(err, cause) {
		t.Errorf("Error() = %q, want the cause's %q, and to unwrap to it", err, cause)
	}
}
