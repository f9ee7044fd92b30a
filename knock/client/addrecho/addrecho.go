// Package addrecho learns this host's public address from an HTTPS
// endpoint that echoes the caller's address (the body is the address as
// text, e.g. https://icanhazip.com/), so that an attacker on the path
// cannot forge the answer as it can a plain STUN one: the endpoint's
// certificate is verified against the system's roots. The endpoint's
// Date header, authenticated by the same TLS session, tells the client
// how far its clock is off.
//
// It speaks a small HTTP/1.1 GET over crypto/tls by hand, because
// net/http (and its init and size) must stay out of the client binary. It
// dials in the family it is told, so that the echoed address is the one
// knocks of that family come from, and it never uses a proxy (a proxy
// would echo its own address): HTTP(S)_PROXY is ignored.
package addrecho

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultURL is the endpoint asked when none is configured: Cloudflare's
// icanhazip.com, which answers over IPv4 and IPv6. It learns the
// caller's address, the time of the request and that it was sknock.
const DefaultURL = "https://icanhazip.com/"

// DefaultTimeout bounds one question.
const DefaultTimeout = 3 * time.Second

// maxResponse bounds what is read of an address echo's answer.
const maxResponse = 8 << 10

// maxBody bounds any body Get reads: a CRL's bound (16 MiB).
const maxBody = 16 << 20

// Answer is what the endpoint said.
type Answer struct {
	// Addr is the caller's address as the endpoint saw it.
	Addr netip.Addr
	// Date is the endpoint's Date header (zero when it sent none).
	Date time.Time
}

// ErrAnswer is returned (wrapped) for an answer that is not an address.
var ErrAnswer = errors.New("the endpoint's answer is not an address")

// Ask asks the endpoint at rawURL (https only) over network ("tcp4" or
// "tcp6") for this host's address, verifying its certificate against
// roots (nil: the system's). Errors name the URL.
func Ask(ctx context.Context, network, rawURL string, roots *x509.CertPool) (Answer, error) {
	ans, err := ask(ctx, network, rawURL, roots)
	if err != nil {
		return Answer{}, fmt.Errorf("ask %s for this host's address: %w", rawURL, err)
	}
	return ans, nil
}

func ask(ctx context.Context, network, rawURL string, roots *x509.CertPool) (Answer, error) {
	if !strings.HasPrefix(rawURL, "https://") {
		return Answer{}, errors.New("not an https:// URL")
	}
	resp, err := Get(ctx, network, rawURL, roots, maxResponse)
	if err != nil {
		return Answer{}, err
	}
	return answerOf(resp)
}

// answerOf reads the address a response's body holds.
func answerOf(resp Response) (Answer, error) {
	a, err := netip.ParseAddr(string(bytes.TrimSpace(resp.Body)))
	if err != nil {
		return Answer{}, fmt.Errorf("%w: %q", ErrAnswer, truncate(bytes.TrimSpace(resp.Body)))
	}
	return Answer{Addr: a.Unmap(), Date: resp.Date}, nil
}

// Response is an answer to Get: its body and its Date header.
type Response struct {
	Body []byte
	// Date is the Date header (zero without one). Over https it is
	// authenticated; over plain http anyone on the path may have set it.
	Date time.Time
}

// Get GETs rawURL (http:// or https://, verified against roots, nil
// meaning the system's) over network ("tcp", "tcp4" or "tcp6"), without a
// proxy, and returns a 200 answer's body (at most maxBody bytes with its
// headers) and Date.
func Get(ctx context.Context, network, rawURL string, roots *x509.CertPool, maxBody int) (Response, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return Response{}, err
	}
	port := map[string]string{"https": "443", "http": "80"}[u.Scheme]
	if port == "" || u.Host == "" {
		return Response{}, errors.New("not an http:// or https:// URL")
	}
	host := u.Hostname()
	if u.Port() != "" {
		port = u.Port()
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, net.JoinHostPort(host, port))
	if err != nil {
		return Response{}, err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	if u.Scheme == "https" {
		tc := tls.Client(conn, &tls.Config{ServerName: host, RootCAs: roots, MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			return Response{}, err
		}
		conn = tc
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if u.RawQuery != "" {
		path += "?" + u.RawQuery
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: sknock\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return Response{}, err
	}
	return readResponse(bufio.NewReader(io.LimitReader(conn, int64(maxBody)+4096)))
}

// readAnswer reads an HTTP/1.1 response whose body is an address.
func readAnswer(r *bufio.Reader) (Answer, error) {
	resp, err := readResponse(r)
	if err != nil {
		return Answer{}, err
	}
	return answerOf(resp)
}

// readResponse reads an HTTP/1.x response and returns a 200's body and
// Date.
func readResponse(r *bufio.Reader) (Response, error) {
	status, err := r.ReadString('\n')
	if err != nil {
		return Response{}, fmt.Errorf("read the status line: %w", err)
	}
	proto, code, _ := strings.Cut(strings.TrimSpace(status), " ")
	if !strings.HasPrefix(proto, "HTTP/1.") {
		return Response{}, fmt.Errorf("not an HTTP/1.x answer: %q", strings.TrimSpace(status))
	}
	if code, _, _ = strings.Cut(code, " "); code != "200" {
		return Response{}, fmt.Errorf("HTTP status %s", strings.TrimSpace(status[len(proto):]))
	}
	var resp Response
	length, chunked := -1, false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return Response{}, fmt.Errorf("read the headers: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "date":
			resp.Date, _ = time.Parse(time.RFC1123, value) // HTTP dates are RFC 1123 in GMT
		case "content-length":
			if n, err := strconv.Atoi(value); err == nil && n >= 0 {
				length = n
			}
		case "transfer-encoding":
			chunked = strings.EqualFold(value, "chunked")
		}
	}
	if resp.Body, err = readBody(r, length, chunked); err != nil {
		return Response{}, fmt.Errorf("read the body: %w", err)
	}
	return resp, nil
}

// readBody reads a body of length bytes (-1: until the end), or chunked.
func readBody(r *bufio.Reader, length int, chunked bool) ([]byte, error) {
	switch {
	case chunked:
		var body []byte
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return nil, err
			}
			sizeText, _, _ := strings.Cut(strings.TrimSpace(line), ";")
			size, err := strconv.ParseUint(sizeText, 16, 16)
			if err != nil {
				return nil, fmt.Errorf("chunk size %q", sizeText)
			}
			if size == 0 {
				return body, nil
			}
			chunk := make([]byte, size+2) // and its CRLF
			if _, err := io.ReadFull(r, chunk); err != nil {
				return nil, err
			}
			body = append(body, chunk[:size]...)
		}
	case length > maxBody:
		return nil, fmt.Errorf("Content-Length %d over the bound of %d bytes", length, maxBody)
	case length >= 0:
		body := make([]byte, length)
		_, err := io.ReadFull(r, body)
		return body, err
	}
	return io.ReadAll(r)
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}
