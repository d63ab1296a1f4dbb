package federation

import (
	"crypto/x509"
	"log/slog"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"engram/dag"
	"engram/dag/rooms"
	"engram/log"
	"engram/projections"
)

// Config is the federation side of the server's configuration.
type Config struct {
	ServerName string
	Key        dag.SigningKey
	// RootCAs verifies remote servers' certificates; nil means the system
	// pool. The serve command adds --federation-ca to it.
	RootCAs *x509.CertPool
	// MaxBackoff caps the retry interval for an unreachable destination.
	MaxBackoff time.Duration
	// KeyValidity is how long our published key response stays valid.
	KeyValidity time.Duration
	// MaxBodyBytes limits inbound request bodies.
	MaxBodyBytes int
	Logger       *slog.Logger
}

// Federation is the server-server API of one server.
type Federation struct {
	cfg      Config
	log      *log.Log
	store    *projections.Store
	rooms    *rooms.Sequencer
	logger   *slog.Logger
	client   *Client
	keys     *KeyRing
	sender   *Sender
	inflight inflight // requests being handled
	httpMu   sync.Mutex
	http     *fasthttp.Server
	shutDown bool

	txnMu sync.Mutex
	txns  map[string][]byte // origin\x00txnID -> answer
	txnQ  []string

	edus eduHandlers

	// publicRooms serves /publicRooms (SetPublicRooms).
	publicRooms func(query map[string]string, body []byte) ([]byte, int)
	acl         aclCache
	// e2ee answers the E2EE key queries (SetE2EE, e2ee.go).
	e2ee E2EE
	// hierarchy answers /hierarchy for other servers (SetHierarchy, hierarchy.go).
	hierarchy func(origin, room string, suggestedOnly bool) ([]byte, int)
}

// New builds the federation service. Start the sender with Run and serve
// the listener with Serve.
func New(cfg Config, l *log.Log, store *projections.Store, seq *rooms.Sequencer) *Federation {
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Minute
	}
	if cfg.KeyValidity <= 0 {
		cfg.KeyValidity = 24 * time.Hour
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 50 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	f := &Federation{cfg: cfg, log: l, store: store, rooms: seq, logger: cfg.Logger, txns: map[string][]byte{}}
	f.client = newClient(f)
	f.keys = newKeyRing(f)
	f.sender = newSender(f)
	return f
}

// Client returns the outbound client.
func (f *Federation) Client() *Client { return f.client }
