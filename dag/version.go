package dag

// RoomVersion describes what differs between Matrix room versions, as data.
// Each version is built from the previous one, so a difference is stated once.
// See ../shared/matrix-spec/content/rooms/v*.md.
type RoomVersion struct {
	ID string
	// Stable is false for versions we accept from federation but never create.
	Stable bool

	// EventIDFormat: 1 = "$opaque:server" carried in the event (v1, v2),
	// 3 = "$"+base64(reference hash) (v3), 4 = "$"+urlsafe base64 (v4+).
	EventIDFormat int
	// StateRes: 1 = state resolution v1, 2 = v2, 21 = v2.1 (v12).
	StateRes int
	// EnforceKeyValidity: signing keys must be valid at origin_server_ts (v5+).
	EnforceKeyValidity bool
	// SpecialCaseAliases: m.room.aliases has its own auth rule and redaction (v1-v5).
	SpecialCaseAliases bool
	// StrictCanonicalJSON: integers outside [-(2**53)+1, (2**53)-1] and floats are rejected (v6+).
	StrictCanonicalJSON bool
	// NotificationsPowerLevel: m.room.power_levels notifications key is checked (v6+).
	NotificationsPowerLevel bool
	// Knocking: knock membership and join rule (v7+).
	Knocking bool
	// RestrictedJoins: restricted join rule and join_authorised_via_users_server (v8+).
	RestrictedJoins bool
	// RedactKeepsJoinAuthorised: redaction keeps join_authorised_via_users_server (v9+).
	RedactKeepsJoinAuthorised bool
	// KnockRestricted: knock_restricted join rule (v10+).
	KnockRestricted bool
	// IntegerPowerLevels: power level values must be integers, not strings (v10+).
	IntegerPowerLevels bool
	// CreatorIsSender: m.room.create has no creator key; the sender is the creator,
	// and the v11 redaction algorithm applies (v11+).
	CreatorIsSender bool
	// RoomIDFromCreate: the room ID is "!"+ the create event's reference hash; the
	// create event has no room_id and is not listed in auth_events; creators have
	// infinite power level (v12+).
	RoomIDFromCreate bool
}

var (
	RoomV1 = RoomVersion{ID: "1", Stable: true, EventIDFormat: 1, StateRes: 1, SpecialCaseAliases: true}
	RoomV2 = func() RoomVersion { v := RoomV1; v.ID = "2"; v.StateRes = 2; return v }()
	RoomV3 = func() RoomVersion { v := RoomV2; v.ID = "3"; v.EventIDFormat = 3; return v }()
	RoomV4 = func() RoomVersion { v := RoomV3; v.ID = "4"; v.EventIDFormat = 4; return v }()
	RoomV5 = func() RoomVersion { v := RoomV4; v.ID = "5"; v.EnforceKeyValidity = true; return v }()
	RoomV6 = func() RoomVersion {
		v := RoomV5
		v.ID = "6"
		v.SpecialCaseAliases = false
		v.StrictCanonicalJSON = true
		v.NotificationsPowerLevel = true
		return v
	}()
	RoomV7  = func() RoomVersion { v := RoomV6; v.ID = "7"; v.Knocking = true; return v }()
	RoomV8  = func() RoomVersion { v := RoomV7; v.ID = "8"; v.RestrictedJoins = true; return v }()
	RoomV9  = func() RoomVersion { v := RoomV8; v.ID = "9"; v.RedactKeepsJoinAuthorised = true; return v }()
	RoomV10 = func() RoomVersion {
		v := RoomV9
		v.ID = "10"
		v.KnockRestricted = true
		v.IntegerPowerLevels = true
		return v
	}()
	RoomV11 = func() RoomVersion { v := RoomV10; v.ID = "11"; v.CreatorIsSender = true; return v }()
	RoomV12 = func() RoomVersion {
		v := RoomV11
		v.ID = "12"
		v.StateRes = 21
		v.RoomIDFromCreate = true
		return v
	}()
)

// DefaultRoomVersion is what new rooms get unless configured otherwise; the spec
// recommends v12 as of v1.19 (client-server-api, "Room versions").
const DefaultRoomVersion = "12"

var versions = map[string]*RoomVersion{
	"1": &RoomV1, "2": &RoomV2, "3": &RoomV3, "4": &RoomV4, "5": &RoomV5, "6": &RoomV6,
	"7": &RoomV7, "8": &RoomV8, "9": &RoomV9, "10": &RoomV10, "11": &RoomV11, "12": &RoomV12,
}

// Version returns the rules for a room version ID, or nil if it is unknown.
func Version(id string) *RoomVersion { return versions[id] }

// CreatableVersions are the versions this server creates rooms in.
var CreatableVersions = []string{"10", "11", "12"}
