package addrecho

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// echoServer is an HTTPS address echo on loopback; answer writes its
// response.
func echoServer(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) (url string, roots *x509.CertPool) {
	t.Helper()
	ts := httptest.NewTLSServer(http.HandlerFunc(answer))
	t.Cleanup(ts.Close)
	roots = x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	return ts.URL + "/ip", roots
}

func TestAskEchoesTheCallerAndTheDate(t *testing.T) {
	date := time.Date(2026, 12, 7, 13, 0, 0, 0, time.UTC)
	url, roots := echoServer(t, func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := strings.Cut(r.RemoteAddr, ":")
		w.Header().Set("Date", date.Format(http.TimeFormat))
		w.Write([]byte(host + "\n"))
	})
	ans, err := Ask(context.Background(), "tcp4", url, roots)
	if err != nil {
		t.Fatal(err)
	}
	if ans.Addr != netip.MustParseAddr("127.0.0.1") || !ans.Date.Equal(date) {
		t.Errorf("Ask = %+v, want 127.0.0.1 at %s", ans, date)
	}
}

// TestAskRefusesAForger: an endpoint whose certificate the roots do not
// vouch for (an attacker on the path answering in its place) is refused,
// and its answer never read.
func TestAskRefusesAForger(t *testing.T) {
	url, _ := echoServer(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("198.18.0.66\n")) })
	var unknown x509.UnknownAuthorityError
	for name, roots := range map[string]*x509.CertPool{"the system's roots": nil, "other roots": x509.NewCertPool()} {
		if _, err := Ask(context.Background(), "tcp4", url, roots); !errors.As(err, &unknown) || !strings.Contains(err.Error(), url) {
			t.Errorf("Ask of a forger under %s: %v, want an unknown-authority error naming the URL", name, err)
		}
	}
	if _, err := Ask(context.Background(), "tcp4", strings.Replace(url, "https", "http", 1), nil); err == nil {
		t.Error("a plain http:// endpoint was asked")
	}
}

func TestReadAnswer(t *testing.T) {
	for _, tt := range []struct {
		name, give string
		want       netip.Addr
		wantErr    string
	}{
		{name: "length", give: "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n198.18.0.2\r\n", want: netip.MustParseAddr("198.18.0.2")},
		{name: "chunked", give: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfd00:\r\n6\r\n5e::2\n\r\n0\r\n\r\n", want: netip.MustParseAddr("fd00:5e::2")},
		{name: "until the end", give: "HTTP/1.0 200 OK\r\n\r\n198.18.0.3", want: netip.MustParseAddr("198.18.0.3")},
		{name: "v4-mapped", give: "HTTP/1.1 200 OK\r\n\r\n::ffff:198.18.0.3", want: netip.MustParseAddr("198.18.0.3")},
		{name: "status", give: "HTTP/1.1 403 Forbidden\r\n\r\n", wantErr: "HTTP status 403 Forbidden"},
		{name: "html", give: "HTTP/1.1 200 OK\r\n\r\n<html>", wantErr: "not an address"},
		{name: "not http", give: "SSH-2.0-OpenSSH\r\n", wantErr: "not an HTTP/1.x answer"},
		{name: "bad chunk", give: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", wantErr: "chunk size"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ans, err := readAnswer(bufio.NewReader(strings.NewReader(tt.give)))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || ans.Addr != tt.want {
				t.Errorf("readAnswer = %v, %v; want %s", ans.Addr, err, tt.want)
			}
		})
	}
}

func FuzzReadAnswer(f *testing.F) {
	f.Add("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfd00:\r\n0\r\n\r\n")
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n::1")
	f.Fuzz(func(t *testing.T, s string) {
		readAnswer(bufio.NewReader(strings.NewReader(s))) // must not panic or hang
	})
}
