package client

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"sknock/knock"
	"sknock/pki"
)

// Defaults for the zero fields of Config.
const (
	// DefaultRetries is how many times a TCP port that did not open is
	// knocked again.
	DefaultRetries = 3
	// DefaultTimeout is how long one knock waits for its TCP port.
	DefaultTimeout = time.Second
	// MinKnockPort and MaxKnockPort bound the random knock port, the
	// gatekeeper's default knock range.
	MinKnockPort, MaxKnockPort = 10000, 60000
)

// Config tunes a Client. The zero Config knocks on a random port in
// 10000–60000, embeds the local address the kernel would use toward the
// host, verifies TCP ports and knocks up to DefaultRetries more times.
type Config struct {
	// KnockPort is the UDP port knocks are sent to. Zero picks a random
	// port in MinKnockPort..MaxKnockPort for every datagram.
	KnockPort uint16
	// SourceIP is the client address embedded in knocks, for a client
	// behind NAT whose public address differs from its own. When set, it
	// overrides Source, and only host addresses of its family are used.
	SourceIP netip.Addr
	// Source chooses the embedded address when SourceIP is not set: see
	// SourceMode. The zero value is SourceDefault.
	Source SourceMode
	// InternalPrefixes are treated as internal addresses, besides the
	// private, shared and link-local ranges, when SourceDefault decides
	// whether to learn the public address. Tests use it to stand a test
	// range in for a private LAN.
	InternalPrefixes []netip.Prefix
	// AddressURL is the HTTPS endpoint that echoes this host's address
	// (package addrecho), asked for the public address unless UseSTUN is
	// set. Empty means addrecho.DefaultURL.
	AddressURL string
	// AddressRoots verify AddressURL's certificate; nil means the
	// system's roots. Tests set it.
	AddressRoots *x509.CertPool
	// UseSTUN learns the public address from plain STUN (STUNServers)
	// instead of AddressURL. STUN answers are not authenticated: an
	// attacker on the path can forge them (the gatekeeper then refuses
	// the knock as a source mismatch and never grants it), so it is only
	// used on request, and its answers are never cached.
	UseSTUN bool
	// STUNServers are the HOST:PORT of the STUN servers asked for the
	// public address under UseSTUN. Empty means stun.DefaultServers.
	STUNServers []string
	// STUNTimeout bounds one discovery (STUN or HTTPS). Zero means
	// stun.DefaultTimeout for STUN and addrecho.DefaultTimeout for HTTPS.
	STUNTimeout time.Duration
	// CRLURL is where the CA publishes its CRL (http:// or https://),
	// fetched when a port did not open to tell whether the client's
	// certificate is revoked. Empty means the certificate's CRL
	// distribution point, if any.
	CRLURL string
	// NoSTUNCache turns off the cache of addresses learnt from
	// AddressURL (see DefaultSTUNCacheTTL).
	NoSTUNCache bool
	// Discover returns the public address of this host for network
	// ("udp4" or "udp6"), local being the local address toward the
	// gatekeeper. Nil means asking AddressURL through the cache, or
	// STUNServers under UseSTUN. Tests replace it.
	Discover func(ctx context.Context, network string, local netip.Addr) (netip.Addr, error)
	// LocalAddr returns the local address the kernel sends from toward
	// host. Nil means asking the kernel (a connected UDP socket, which
	// sends nothing). Tests replace it.
	LocalAddr func(host netip.Addr) (netip.Addr, error)
	// Network restricts the host's address family: "ip4" or "ip6". Empty
	// means either: a name with addresses of both families is knocked on
	// one, and on the other when the first did not open, in the order
	// the resolver prefers (Happy Eyeballs, RFC 8305).
	Network string
	// Retries is how many more times a TCP port is knocked when it did
	// not open within Timeout. Zero means DefaultRetries; negative means
	// a single knock.
	Retries int
	// Timeout is how long each knock waits for its TCP port to accept a
	// connection. Zero means DefaultTimeout.
	Timeout time.Duration
	// NoVerify sends the knocks and does not connect to TCP ports.
	NoVerify bool
	// Dial makes the connections that verify TCP ports. Nil means a
	// net.Dialer. It must honour ctx.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Now is the clock whose Unix seconds become the knock timestamp.
	// Nil means time.Now.
	Now func() time.Time
	// Protocol is the wire version knocks are sealed in: 2 (the zero
	// value's choice) seals every request of a Knock call in one datagram
	// (up to knock.MaxRequests) with a mac1 the gatekeeper checks before
	// any public-key work; 1 is the original sKnock format, one datagram
	// per request, for original sKnock servers and gatekeepers that
	// refuse v2. The client never falls back from one to the other.
	Protocol int
	// KeyCache, used by Load only, keeps the unlocked bundle in the
	// kernel's per-user keyring for this long (rounded up to seconds), so
	// that Loads in that time skip the password derivation, about 2 ms.
	// Like ssh-agent, it lets any process of the same user use the key
	// without the password while the entry lives; and the entry's name, a
	// SHA-256 of the bundle and the password, lets such a process test
	// password guesses quickly, so the bundle password must not be one
	// used elsewhere. At most about 68 years (the kernel's limit); zero:
	// no cache.
	KeyCache time.Duration
}

// Client knocks with one certificate at one gatekeeper. It is safe for
// concurrent use.
type Client struct {
	key    *ecdsa.PrivateKey
	cert   []byte // client certificate, DER
	server *ecdh.PublicKey
	// target is the server as v2 seals to it (from its certificate's
	// SubjectPublicKeyInfo).
	target *knock.Target
	cfg    Config
	// allow is what the client's certificate authorises, when allowKnown.
	allow      pki.Authorization
	allowKnown bool
	// serverNames are the DNS names and addresses the server certificate
	// names, if any (certificates of sknock pki name none).
	serverNames []string
	// own is the client's certificate, parsed (nil until Load or New),
	// and cas the CA certificates of its bundle (none from the key
	// cache), which check the CRL of selfCheck.
	own *x509.Certificate
	cas []*x509.Certificate
	// echo is the last answer of AddressURL, whose Date checks the clock.
	echo echoSeen
	// customDial: Config.Dial was given (tests), and the connection
	// started before the first knock goes through it too.
	customDial bool
}

// Protocol returns the wire version the client seals knocks in: 1 or 2.
func (c *Client) Protocol() int { return c.cfg.Protocol }

// New returns a Client that signs with bundle's key and certificate and
// encrypts to serverCert's key, which must be P-256. cfg may be nil for the
// defaults; New keeps a copy.
func New(bundle *pki.Bundle, serverCert *x509.Certificate, cfg *Config) (*Client, error) {
	if bundle == nil || bundle.Key == nil || bundle.Cert == nil {
		return nil, errors.New("new knock client: bundle without key or certificate")
	}
	if serverCert == nil {
		return nil, errors.New("new knock client: no server certificate")
	}
	server, err := serverECDHKey(serverCert.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("new knock client: server certificate %s: %w", serverCert.Subject, err)
	}
	c, err := newClient(bundle.Key, bundle.Cert.Raw, server, cfg)
	if err != nil {
		return nil, err
	}
	if c.target, err = knock.NewTarget(serverCert.RawSubjectPublicKeyInfo); err != nil {
		return nil, fmt.Errorf("new knock client: server certificate %s: %w", serverCert.Subject, err)
	}
	c.readAuthorization(bundle.Cert)
	c.own, c.cas = bundle.Cert, bundle.CAs
	return c, nil
}

// readAuthorization remembers what cert authorises, so that a port it
// does not is refused without sending anything.
func (c *Client) readAuthorization(cert *x509.Certificate) {
	a, _, err := pki.AuthorizationFromCertificate(cert)
	c.allow, c.allowKnown = a, err == nil
}

// serverECDHKey turns the server certificate's public key into the P-256
// ECDH key knocks are sealed to.
func serverECDHKey(pub any) (*ecdh.PublicKey, error) {
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%T key, want P-256 ECDSA", pub)
	}
	server, err := ec.ECDH()
	if err != nil {
		return nil, err
	}
	if server.Curve() != ecdh.P256() {
		return nil, errors.New("key not on P-256")
	}
	return server, nil
}

// newClient returns a Client signing with key, sending certDER, sealing to
// server, with cfg's defaults filled in.
func newClient(key *ecdsa.PrivateKey, certDER []byte, server *ecdh.PublicKey, cfg *Config) (*Client, error) {
	c := &Client{key: key, cert: certDER, server: server}
	if cfg != nil {
		c.cfg = *cfg
	}
	switch c.cfg.Network {
	case "", "ip", "ip4", "ip6":
	default:
		return nil, fmt.Errorf("new knock client: network %q (want ip4, ip6 or empty)", c.cfg.Network)
	}
	switch c.cfg.Protocol {
	case 0:
		c.cfg.Protocol = 2
	case 1, 2:
	default:
		return nil, fmt.Errorf("new knock client: protocol %d (want 1 or 2)", c.cfg.Protocol)
	}
	if c.cfg.Retries == 0 {
		c.cfg.Retries = DefaultRetries
	} else if c.cfg.Retries < 0 {
		c.cfg.Retries = 0
	}
	if c.cfg.Timeout <= 0 {
		c.cfg.Timeout = DefaultTimeout
	}
	c.customDial = c.cfg.Dial != nil
	if c.cfg.Dial == nil {
		var d net.Dialer
		c.cfg.Dial = d.DialContext
	}
	if c.cfg.Now == nil {
		c.cfg.Now = time.Now
	}
	if c.cfg.Discover == nil {
		c.cfg.Discover = c.discoverHTTPS
		if c.cfg.UseSTUN {
			c.cfg.Discover = c.discoverSTUN
		}
	}
	if c.cfg.LocalAddr == nil {
		c.cfg.LocalAddr = localAddrToward
	}
	if c.cfg.SourceIP.IsValid() {
		c.cfg.SourceIP = c.cfg.SourceIP.Unmap()
		fam := "ip4"
		if c.cfg.SourceIP.Is6() {
			fam = "ip6"
		}
		if c.cfg.Network != "" && c.cfg.Network != "ip" && c.cfg.Network != fam {
			return nil, fmt.Errorf("new knock client: source address %s is not an %s address", c.cfg.SourceIP, familyName(c.cfg.Network))
		}
	}
	return c, nil
}

// Load reads the client's PKCS#12 bundle (legacy or modern) and the
// server's certificate (DER or PEM; the first one counts) and returns a
// Client for them. Errors name the file and, for a wrong password, wrap
// pki.ErrPassword. With cfg.KeyCache set, the bundle may come from the key
// cache instead.
func Load(pkcs12Path, password, serverCertPath string, cfg *Config) (*Client, error) {
	var key *ecdsa.PrivateKey
	var certDER []byte
	var cas []*x509.Certificate
	if cfg != nil && cfg.KeyCache > 0 {
		k, err := loadKeyCached(defaultKeyring, pkcs12Path, password, cfg.KeyCache)
		if err != nil {
			return nil, err
		}
		key, certDER = k.key, k.cert
	} else {
		bundle, err := pki.LoadBundle(pkcs12Path, password)
		if err != nil {
			return nil, err
		}
		key, certDER, cas = bundle.Key, bundle.Cert.Raw, bundle.CAs
	}
	now := time.Now
	if cfg != nil && cfg.Now != nil {
		now = cfg.Now
	}
	own, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("client certificate in %s: %w", pkcs12Path, err)
	}
	if err := checkClientCert(own, pkcs12Path, now()); err != nil {
		return nil, err
	}
	serverCert, err := loadServerCert(serverCertPath, now())
	if err != nil {
		return nil, err
	}
	server, err := serverECDHKey(serverCert.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("server certificate %s: %w", serverCertPath, err)
	}
	c, err := newClient(key, certDER, server, cfg)
	if err != nil {
		return nil, err
	}
	if c.target, err = knock.NewTarget(serverCert.RawSubjectPublicKeyInfo); err != nil {
		return nil, fmt.Errorf("server certificate %s: %w", serverCertPath, err)
	}
	c.readAuthorization(own)
	c.own, c.cas = own, cas
	c.serverNames = serverCert.DNSNames
	for _, ip := range serverCert.IPAddresses {
		c.serverNames = append(c.serverNames, ip.String())
	}
	return c, nil
}
