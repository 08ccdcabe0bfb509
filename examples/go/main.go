// Command checkout is a Go client of nvp-adapter, on grpc-go with stubs that protoc-gen-go and
// protoc-gen-go-grpc generate from ../../proto (never committed: scripts/go_example.sh makes them
// before each build, so they cannot drift from the proto):
//
//  1. the Hosted Session backend flow: CreateSession, UpdateSession with an order, the MPGS test
//     card put into the session (what the payer's browser does through session.js), and
//     RetrieveSession, which shows the card masked;
//  2. a payment: Pay with the session and a transaction id chosen before the call, then Pay again
//     with the same ids, which gets the same transaction (trailer `nvp-adapter-outcome:
//     replayed`) and no second charge;
//  3. two calls that must fail, and their rich details decoded from the status: UpdateSession
//     with the amount "10.5.0" (INVALID_ARGUMENT, ErrorInfo and a BadRequest naming order.amount)
//     and a Refund of more than was captured (FAILED_PRECONDITION AMOUNT_EXCEEDS_BALANCE, with the
//     gateway's own error as an mpgs.gateway.v1.GatewayError).
//
// The payment steps need the embedded gateway (`nvp-adapter serve` with no upstream URL) or an
// MPGS test merchant.
//
// Usage: checkout --target HOST:PORT [--merchant TESTMERCHANT]
//
// Exit 0 when every step got what it expected; 1 otherwise (each expectation is printed, ok or
// FAIL, with what was seen); 2 for a usage error.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	gatewayv1 "nvp-adapter.example/gen/go/mpgs/gateway/v1"
)

const (
	callTimeout = 10 * time.Second
	// A payment's deadline: room for its attempt and for finding a lost answer again.
	payTimeout     = 30 * time.Second
	outcomeTrailer = "nvp-adapter-outcome"
	correlationID  = "go-example"
	// The MPGS test Mastercard: its expiry date chooses the outcome (01/39 approved).
	testCard         = "5123450000000008"
	maskedTestCard   = "512345xxxxxx0008"
	testSecurityCode = "100"
)

var (
	sessionID      = regexp.MustCompile(`^[0-9A-Za-z]{31,35}$`)
	sessionVersion = regexp.MustCompile(`^[0-9a-z]{10}$`)
	decimal        = regexp.MustCompile(`^(\d+)(?:\.(\d+))?$`)
)

// expectations prints each expectation, ok or FAIL, and counts the failures.
type expectations struct{ failed int }

func (e *expectations) that(holds bool, format string, args ...interface{}) bool {
	mark := "ok  "
	if !holds {
		mark = "FAIL"
		e.failed++
	}
	fmt.Printf("  %s %s\n", mark, fmt.Sprintf(format, args...))
	return holds
}

// succeeded is true when a call that must succeed did; otherwise it prints a FAIL with the status.
func (e *expectations) succeeded(rpc string, err error) bool {
	if err == nil {
		return true
	}
	rich := decode(err)
	e.that(false, "%s succeeds: %s %s", rpc, rich.code, rich.message)
	rich.print()
	return false
}

// richStatus is a failed call's status with the details nvp-adapter attaches, decoded.
type richStatus struct {
	code         codes.Code
	message      string
	info         *errdetails.ErrorInfo
	badRequest   *errdetails.BadRequest
	gatewayError *gatewayv1.GatewayError
	others       []string
}

// decode reads the google.rpc.Status that grpc-go parsed from the grpc-status-details-bin
// trailer. Details() unpacks each Any by its type URL from the types linked into the program:
// errdetails registers google.rpc.*, and the generated gatewayv1 package registers GatewayError.
func decode(err error) richStatus {
	st := status.Convert(err)
	rich := richStatus{code: st.Code(), message: st.Message()}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			rich.info = d
		case *errdetails.BadRequest:
			rich.badRequest = d
		case *gatewayv1.GatewayError:
			rich.gatewayError = d
		case error: // a detail whose type this program does not link
			rich.others = append(rich.others, d.Error())
		default:
			rich.others = append(rich.others, fmt.Sprintf("%T: %v", d, d))
		}
	}
	return rich
}

func (r richStatus) print() {
	if r.info != nil {
		fmt.Printf("       google.rpc.ErrorInfo: %v\n", r.info)
	}
	if r.badRequest != nil {
		fmt.Printf("       google.rpc.BadRequest: %v\n", r.badRequest)
	}
	if r.gatewayError != nil {
		fmt.Printf("       mpgs.gateway.v1.GatewayError: %v\n", r.gatewayError)
	}
	for _, other := range r.others {
		fmt.Printf("       %s\n", other)
	}
}

// sameAmount compares decimal strings as decimals, never as floats: "10.50" and "10.5" are equal.
func sameAmount(a, b string) bool {
	canonical := func(text string) (string, bool) {
		match := decimal.FindStringSubmatch(text)
		if match == nil {
			return "", false
		}
		whole := strings.TrimLeft(match[1], "0")
		if whole == "" {
			whole = "0"
		}
		if fraction := strings.TrimRight(match[2], "0"); fraction != "" {
			return whole + "." + fraction, true
		}
		return whole, true
	}
	left, ok := canonical(a)
	right, _ := canonical(b)
	return ok && left == right
}

// outcome is what the adapter says about how it got the answer: "reconciled", "replayed" or ""
// (directly from the gateway).
func outcome(trailer metadata.MD) string {
	if values := trailer.Get(outcomeTrailer); len(values) > 0 {
		return values[0]
	}
	return ""
}

func orNone(text string) string {
	if text == "" {
		return "(none)"
	}
	return text
}

// cardFields are what the payer's browser puts into the session through session.js: never the
// backend's job in production, where the backend never sees the card number.
func cardFields() map[string]string {
	return map[string]string{
		"sourceOfFunds.provided.card.number":       testCard,
		"sourceOfFunds.provided.card.expiry.month": "01",
		"sourceOfFunds.provided.card.expiry.year":  "39",
		"sourceOfFunds.provided.card.securityCode": testSecurityCode,
	}
}

// showsFullCard is true when the full card number appears anywhere in a message.
func showsFullCard(message proto.Message) bool {
	return strings.Contains(fmt.Sprint(message), testCard)
}

type client struct {
	sessions gatewayv1.SessionServiceClient
	payments gatewayv1.PaymentServiceClient
	merchant string
	expect   *expectations
}

// run is the whole flow; it returns early when a step that later ones need has failed.
func (c *client) run(ctx context.Context) {
	var random [4]byte
	if _, err := rand.Read(random[:]); err != nil {
		panic(err)
	}
	order := &gatewayv1.Order{Id: "order-go-" + hex.EncodeToString(random[:]), Amount: "10.50", Currency: "USD"}

	fmt.Println("1. CreateSession")
	call, cancel := context.WithTimeout(ctx, callTimeout)
	created, err := c.sessions.CreateSession(call, &gatewayv1.CreateSessionRequest{
		Merchant: c.merchant, CorrelationId: correlationID,
	})
	cancel()
	if !c.expect.succeeded("CreateSession", err) {
		return
	}
	session := created.GetSession()
	c.expect.that(created.GetResult() == gatewayv1.Result_RESULT_SUCCESS, "result %s", created.GetResult())
	c.expect.that(sessionID.MatchString(session.GetId()), "session id %s", session.GetId())
	c.expect.that(sessionVersion.MatchString(session.GetVersion()), "version %s", session.GetVersion())

	fmt.Printf("2. UpdateSession: order %s %s %s\n", order.Id, order.Amount, order.Currency)
	call, cancel = context.WithTimeout(ctx, callTimeout)
	updated, err := c.sessions.UpdateSession(call, &gatewayv1.UpdateSessionRequest{
		Merchant:      c.merchant,
		CorrelationId: correlationID,
		// The version just seen: a concurrent change makes the gateway refuse, not overwrite.
		Session: &gatewayv1.SessionRevision{Id: session.GetId(), Version: session.GetVersion()},
		Order:   order,
	})
	cancel()
	if !c.expect.succeeded("UpdateSession", err) {
		return
	}
	c.expect.that(updated.GetResult() == gatewayv1.Result_RESULT_SUCCESS, "result %s", updated.GetResult())
	c.expect.that(
		updated.GetSession().GetUpdateStatus() == gatewayv1.SessionUpdateStatus_SESSION_UPDATE_STATUS_SUCCESS,
		"updateStatus %s", updated.GetSession().GetUpdateStatus())
	c.expect.that(
		sameAmount(updated.GetOrder().GetAmount(), order.Amount),
		"holds the amount set: %s (set %s)", orNone(updated.GetOrder().GetAmount()), order.Amount)

	fmt.Println("3. UpdateSession with the test card (what the browser does through session.js)")
	call, cancel = context.WithTimeout(ctx, callTimeout)
	carded, err := c.sessions.UpdateSession(call, &gatewayv1.UpdateSessionRequest{
		Merchant:    c.merchant,
		Session:     &gatewayv1.SessionRevision{Id: session.GetId()},
		ExtraFields: cardFields(),
	})
	cancel()
	if !c.expect.succeeded("UpdateSession", err) {
		return
	}
	c.expect.that(carded.GetResult() == gatewayv1.Result_RESULT_SUCCESS, "result %s", carded.GetResult())
	c.expect.that(!showsFullCard(carded), "the answer never shows the full card number")

	fmt.Println("4. RetrieveSession: the order and the card are held, the card masked")
	call, cancel = context.WithTimeout(ctx, callTimeout)
	retrieved, err := c.sessions.RetrieveSession(call, &gatewayv1.RetrieveSessionRequest{
		Merchant: c.merchant, CorrelationId: correlationID, Session: &gatewayv1.SessionRef{Id: session.GetId()},
	})
	cancel()
	if !c.expect.succeeded("RetrieveSession", err) {
		return
	}
	held := retrieved.GetExtraFields()
	c.expect.that(retrieved.GetOrder().GetId() == order.Id, "holds the order id set: %s", orNone(retrieved.GetOrder().GetId()))
	number := held["sourceOfFunds.provided.card.number"]
	c.expect.that(number == maskedTestCard, "card number %s", orNone(number))
	c.expect.that(!showsFullCard(retrieved), "the full card number shows nowhere")
	securityCode, present := held["sourceOfFunds.provided.card.securityCode"]
	c.expect.that(!present || securityCode == "xxx", "security code %s", orNone(securityCode))
	version := retrieved.GetSession().GetVersion()
	c.expect.that(version == carded.GetSession().GetVersion(), "version to pay with: %s", version)

	// The transaction id is chosen before the first call and kept: it is what makes a retry safe.
	pay := &gatewayv1.PayRequest{
		Merchant:      c.merchant,
		CorrelationId: correlationID,
		Order:         order,
		Transaction:   &gatewayv1.NewTransaction{Id: "pay-1"},
		Session:       &gatewayv1.SessionRevision{Id: session.GetId(), Version: version},
	}
	fmt.Printf("5. Pay %s %s, order %s, transaction %s\n", order.Amount, order.Currency, order.Id, pay.Transaction.Id)
	var trailer metadata.MD
	call, cancel = context.WithTimeout(ctx, payTimeout)
	paid, err := c.payments.Pay(call, pay, grpc.Trailer(&trailer))
	cancel()
	if !c.expect.succeeded("Pay", err) {
		return
	}
	transaction := paid.GetTransaction()
	c.expect.that(paid.GetResult() == gatewayv1.Result_RESULT_SUCCESS, "result %s", paid.GetResult())
	c.expect.that(
		paid.GetResponse().GetGatewayCode() == gatewayv1.GatewayCode_GATEWAY_CODE_APPROVED,
		"gateway code %s", paid.GetResponse().GetGatewayCode())
	c.expect.that(
		transaction.GetId() == pay.Transaction.Id && transaction.GetType() == gatewayv1.TransactionType_TRANSACTION_TYPE_PAYMENT,
		"transaction %s %s", transaction.GetId(), transaction.GetType())
	c.expect.that(
		sameAmount(transaction.GetAmount(), order.Amount) && transaction.GetCurrency() == order.Currency,
		"amount %s %s (asked %s %s)", transaction.GetAmount(), transaction.GetCurrency(), order.Amount, order.Currency)
	masked := paid.GetSourceOfFunds().GetProvided().GetCard().GetNumber()
	c.expect.that(masked == maskedTestCard && !showsFullCard(paid), "the card shows masked: %s", orNone(masked))
	c.expect.that(outcome(trailer) == "", "answered directly: %s %s", outcomeTrailer, orNone(outcome(trailer)))

	fmt.Println("6. Pay again with the same ids: the same transaction, no second charge")
	trailer = nil
	call, cancel = context.WithTimeout(ctx, payTimeout)
	again, err := c.payments.Pay(call, pay, grpc.Trailer(&trailer))
	cancel()
	if !c.expect.succeeded("Pay", err) {
		return
	}
	c.expect.that(
		proto.Equal(again.GetTransaction(), transaction),
		"the same transaction: %s %s", again.GetTransaction().GetId(), again.GetTransaction().GetAmount())
	c.expect.that(
		outcome(trailer) == "replayed",
		"answered from the gateway's record: %s %s", outcomeTrailer, orNone(outcome(trailer)))

	fmt.Println(`7. UpdateSession with amount "10.5.0": refused by the adapter, nothing sent`)
	invalid := proto.Clone(order).(*gatewayv1.Order)
	invalid.Amount = "10.5.0"
	call, cancel = context.WithTimeout(ctx, callTimeout)
	_, err = c.sessions.UpdateSession(call, &gatewayv1.UpdateSessionRequest{
		Merchant: c.merchant, Session: &gatewayv1.SessionRevision{Id: session.GetId()}, Order: invalid,
	})
	cancel()
	if c.expect.that(err != nil, "the call fails") {
		rich := decode(err)
		rich.print()
		c.expect.that(rich.code == codes.InvalidArgument, "code %s", rich.code)
		c.expect.that(
			rich.info.GetDomain() == "nvp-adapter" && rich.info.GetReason() == "INVALID_REQUEST",
			"ErrorInfo %s %s", orNone(rich.info.GetDomain()), orNone(rich.info.GetReason()))
		var fields []string
		for _, violation := range rich.badRequest.GetFieldViolations() {
			fields = append(fields, violation.GetField())
		}
		c.expect.that(
			len(fields) == 1 && fields[0] == "order.amount",
			"BadRequest names %s", orNone(strings.Join(fields, ", ")))
		c.expect.that(rich.gatewayError == nil, "no GatewayError: the gateway was not called")
	}

	const tooMuch = "999.00"
	fmt.Printf("8. Refund %s %s: more than was captured, refused\n", tooMuch, order.Currency)
	call, cancel = context.WithTimeout(ctx, payTimeout)
	refund, err := c.payments.Refund(call, &gatewayv1.RefundRequest{
		Merchant:      c.merchant,
		CorrelationId: correlationID,
		Order:         &gatewayv1.OrderRef{Id: order.Id},
		Transaction:   &gatewayv1.AmountTransaction{Id: "refund-1", Amount: tooMuch, Currency: order.Currency},
	})
	cancel()
	if c.expect.that(err != nil, "the call fails") {
		rich := decode(err)
		rich.print()
		c.expect.that(rich.code == codes.FailedPrecondition, "code %s", rich.code)
		c.expect.that(
			rich.info.GetDomain() == "nvp-adapter" && rich.info.GetReason() == "AMOUNT_EXCEEDS_BALANCE",
			"ErrorInfo %s %s", orNone(rich.info.GetDomain()), orNone(rich.info.GetReason()))
		c.expect.that(
			rich.gatewayError.GetCause() == gatewayv1.ErrorCause_ERROR_CAUSE_INVALID_REQUEST &&
				rich.gatewayError.GetField() == "transaction.amount",
			"GatewayError %s %s", rich.gatewayError.GetCause(), orNone(rich.gatewayError.GetField()))
	} else {
		fmt.Printf("     refund %s %s %s\n", refund.GetTransaction().GetId(), refund.GetResult(), refund.GetResponse().GetGatewayCode())
	}
}

func main() {
	os.Exit(checkout())
}

// checkout parses the command line, runs the flow and returns the exit code.
func checkout() int {
	target := flag.String("target", "", "the adapter's address, HOST:PORT (plaintext)")
	merchant := flag.String("merchant", "TESTMERCHANT", "the merchant to act for")
	flag.Parse()
	if *target == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: checkout --target HOST:PORT [--merchant TESTMERCHANT]")
		return 2
	}

	fmt.Printf("adapter: %s\n", *target)
	dial, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	// WithInsecure: plaintext, for an adapter on loopback or in the same pod. grpc-go 1.34 and
	// later spell it grpc.WithTransportCredentials(insecure.NewCredentials()).
	conn, err := grpc.DialContext(dial, *target, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fmt.Printf("go example: cannot connect to %s: %v\n", *target, err)
		return 1
	}
	defer conn.Close()

	expect := &expectations{}
	c := &client{
		sessions: gatewayv1.NewSessionServiceClient(conn),
		payments: gatewayv1.NewPaymentServiceClient(conn), // the same connection
		merchant: *merchant,
		expect:   expect,
	}
	c.run(context.Background())
	if expect.failed > 0 {
		fmt.Printf("go example: %d expectation(s) failed\n", expect.failed)
		return 1
	}
	fmt.Println("go example: ok")
	return 0
}
