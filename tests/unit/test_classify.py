"""Truth table for classify_failure over the seeds' real strings and their look-alikes."""

from __future__ import annotations

import pytest

from bot.actions.classify import classify_failure

SEED_004_MONGO = (
    "mongodump: error connecting to host: could not connect to server: connection() error "
    "occurred during connection handshake: auth error: sasl conversation error: unable to "
    'authenticate using mechanism "SCRAM-SHA-256": connection(mongodb-0:27017[-3]) '
    "socket was unexpectedly closed: EOF"
)
SEED_004_REDIS = (
    "redis-cli --rdb: AUTH failed: WRONGPASS invalid username-password pair or user is disabled."
)
SEED_004_PQ_NOT_NULL = (
    'pq: null value in column "started_at" of relation "resource_backups" violates '
    "not-null constraint"
)


@pytest.mark.parametrize(
    ("text", "kind", "code"),
    [
        # seed 004: the real strings that were misbucketed as "dump"
        (SEED_004_MONGO, "auth", "mongo:18"),
        (SEED_004_REDIS, "auth", "redis:WRONGPASS"),
        ("NOAUTH Authentication required.", "auth", "redis:NOAUTH"),
        # PostgreSQL class 28 in its dialects
        (
            'pq: password authentication failed for user "app" (28P01)',
            "auth",
            "28P01",
        ),
        (
            'FATAL: password authentication failed for user "app" (SQLSTATE 28P01)',
            "auth",
            "28P01",
        ),
        ("ERROR: SQLSTATE 28000: role is not permitted to log in", "auth", "28000"),
        (
            'FATAL: no pg_hba.conf entry for host "10.0.0.3", user "app", database "db"',
            "auth",
            "28000",
        ),
        ('password authentication failed for user "backup"', "auth", "28P01"),
        # MongoDB
        ("(AuthenticationFailed) Authentication failed.", "auth", "mongo:18"),
        (
            '{ ok: 0, errmsg: "Authentication failed.", code: 18, codeName: '
            '"AuthenticationFailed" }',
            "auth",
            "mongo:18",
        ),
        ("mongo: command failed with code: 18", "auth", "mongo:18"),
        # MySQL
        (
            "ERROR 1045 (28000): Access denied for user 'app'@'10.0.0.3' (using password: YES)",
            "auth",
            "mysql:1045",
        ),
        ("Error 1045: Access denied for user 'app'@'%'", "auth", "mysql:1045"),
        # transient look-alikes stay transient
        ("mongodump: socket was unexpectedly closed: EOF", "transient", None),
        ("unexpected EOF", "transient", None),
        ("dial tcp 10.0.0.3:5432: connect: connection refused", "transient", None),
        ("context deadline exceeded", "transient", None),
        ("i/o timeout", "transient", None),
        ("read tcp: connection reset by peer", "transient", None),
        (
            "FATAL: terminating connection due to administrator command (SQLSTATE 57P01)",
            "transient",
            "57P01",
        ),
        (
            "server closed the connection unexpectedly\n\tThis probably means the server "
            "terminated abnormally",
            "transient",
            None,
        ),
        ("redis: connection pool timeout", "transient", None),
        ("FATAL: sorry, too many clients already (SQLSTATE 53300)", "transient", "53300"),
        # near misses that must NOT read as auth
        ("listening on port 28000", "unknown", None),
        ("processed 1045 rows", "unknown", None),
        ("task error code: 18 retries", "unknown", None),
        ("NOAUTHORITY record missing", "unknown", None),
        ("auth_token refreshed; 128P011 bytes", "unknown", None),
        (SEED_004_PQ_NOT_NULL, "unknown", None),
        ("", "unknown", None),
    ],
)
def test_classify_failure(text: str, kind: str, code: str | None) -> None:
    result = classify_failure(text)
    assert (result.kind, result.code) == (kind, code), result.reason


def test_none_is_unknown() -> None:
    assert classify_failure(None).kind == "unknown"


def test_structured_auth_code_beats_transient_marker() -> None:
    text = "dial tcp: i/o timeout after SQLSTATE 28P01"
    assert classify_failure(text).kind == "auth"


# Issue #13: more credential families, each with real driver strings (as printed by the
# driver/CLI; found verbatim in public code and logs with the search tool's find_string,
# e.g. python-oracledb tests "ORA-01017: invalid credential or not authorized; logon
# denied", pika "ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - Login was refused
# using authentication mechanism PLAIN.'", librdkafka "SASL authentication error:
# Authentication failed during authentication due to invalid credentials with SASL
# mechanism SCRAM-SHA-512 (after 346ms in state AUTH_REQ)", botocore "An error occurred
# (InvalidAccessKeyId) when calling the ListBuckets operation: ...", Java JNDI "[LDAP:
# error code 49 - Invalid Credentials]") and their transient look-alikes.
@pytest.mark.parametrize(
    ("text", "kind", "code"),
    [
        # SQL Server 18456
        (
            "('28000', \"[28000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Login "
            "failed for user 'app'. (18456) (SQLDriverConnect)\")",
            "auth",
            "mssql:18456",
        ),
        (
            "(18456, b\"Login failed for user 'sa'.DB-Lib error message 20018, severity 14\")",
            "auth",
            "mssql:18456",
        ),
        (
            "('HYT00', '[HYT00] [Microsoft][ODBC Driver 18 for SQL Server]Login timeout "
            "expired (0) (SQLDriverConnect)')",
            "transient",
            None,
        ),
        (
            "Database 'app' on server 'sql-1' is not currently available. Please retry the "
            "connection later. (40613)",
            "transient",
            None,
        ),
        # Oracle ORA-01017 (old and 23ai wording), ORA-28000; TNS look-alikes
        ("ORA-01017: invalid username/password; logon denied", "auth", "oracle:ORA-01017"),
        (
            "oracledb.exceptions.DatabaseError: ORA-01017: invalid credential or not "
            "authorized; logon denied",
            "auth",
            "oracle:ORA-01017",
        ),
        ("ORA-28000: The account is locked.", "auth", "oracle:ORA-28000"),
        ("ORA-12541: TNS:no listener", "transient", None),
        ("ORA-03113: end-of-file on communication channel", "transient", None),
        ("ORA-12170: TNS:Connect timeout occurred", "transient", None),
        # RabbitMQ ACCESS_REFUSED; CONNECTION_FORCED on broker shutdown stays transient
        (
            "pika.exceptions.ProbableAuthenticationError: ConnectionClosedByBroker: (403) "
            "'ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For "
            "details see the broker logfile.'",
            "auth",
            "rabbitmq:ACCESS_REFUSED",
        ),
        (
            'Handshake terminated by server: 403 (ACCESS-REFUSED) with message "ACCESS_REFUSED'
            ' - Login was refused using authentication mechanism PLAIN."',
            "auth",
            "rabbitmq:ACCESS_REFUSED",
        ),
        (
            'ConnectionClosedByBroker: (320) "CONNECTION_FORCED - broker forced connection '
            "closure with reason 'shutdown'\"",
            "transient",
            None,
        ),
        # AWS
        (
            "botocore.exceptions.ClientError: An error occurred (InvalidAccessKeyId) when "
            "calling the PutObject operation: The AWS Access Key Id you provided does not "
            "exist in our records.",
            "auth",
            "aws:InvalidAccessKeyId",
        ),
        (
            "An error occurred (SignatureDoesNotMatch) when calling the PutObject operation: "
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            "auth",
            "aws:SignatureDoesNotMatch",
        ),
        (
            "An error occurred (ExpiredToken) when calling the PutObject operation: The "
            "provided token has expired.",
            "auth",
            "aws:ExpiredToken",
        ),
        (
            "An error occurred (ExpiredTokenException) when calling the GetCallerIdentity "
            "operation: The security token included in the request is expired",
            "auth",
            "aws:ExpiredToken",
        ),
        (
            "An error occurred (SlowDown) when calling the PutObject operation (reached max "
            "retries: 4): Please reduce your request rate.",
            "transient",
            None,
        ),
        (
            "An error occurred (ThrottlingException) when calling the DescribeTable "
            "operation: Rate exceeded",
            "transient",
            None,
        ),
        (
            "An error occurred (RequestTimeout) when calling the PutObject operation: Your "
            "socket connection to the server was not read from or written to within the "
            "timeout period.",
            "transient",
            None,
        ),
        # Kafka SASL
        (
            "org.apache.kafka.common.errors.SaslAuthenticationException: Authentication "
            "failed during authentication due to invalid credentials with SASL mechanism "
            "SCRAM-SHA-512",
            "auth",
            "kafka:SASL",
        ),
        (
            'KafkaError{code=_AUTHENTICATION,val=-169,str="SASL authentication error: '
            'Authentication failed"}',
            "auth",
            "kafka:SASL",
        ),
        (
            "sasl_ssl://broker:9094/bootstrap: SASL authentication error: Authentication "
            "failed during authentication due to invalid credentials with SASL mechanism "
            "SCRAM-SHA-512 (after 346ms in state AUTH_REQ)",
            "auth",
            "kafka:SASL",
        ),
        (
            "KafkaJSSASLAuthenticationError: SASL SCRAM SHA512 authentication failed: "
            "Authentication failed during authentication due to invalid credentials",
            "auth",
            "kafka:SASL",
        ),
        (
            'KafkaError{code=_TRANSPORT,val=-195,str="broker:9092/bootstrap: Connect to '
            'ipv4#10.0.0.3:9092 failed: Connection refused (after 0ms in state CONNECT)"}',
            "transient",
            None,
        ),
        (
            "org.apache.kafka.common.errors.NotEnoughReplicasException: Messages are "
            "rejected since there are fewer in-sync replicas than required.",
            "transient",
            None,
        ),
        (
            'KafkaError{code=_ALL_BROKERS_DOWN,val=-187,str="1/1 brokers are down"}',
            "transient",
            None,
        ),
        # LDAP 49
        (
            "javax.naming.AuthenticationException: [LDAP: error code 49 - 80090308: LdapErr: "
            "DSID-0C09044E, comment: AcceptSecurityContext error, data 52e, v4563]",
            "auth",
            "ldap:49",
        ),
        (
            "ldap.INVALID_CREDENTIALS: {'msgtype': 97, 'msgid': 1, 'result': 49, 'desc': "
            "'Invalid credentials', 'ctrls': []}",
            "auth",
            "ldap:49",
        ),
        ("ldap_bind: Invalid credentials (49)", "auth", "ldap:49"),
        (
            "LDAPInvalidCredentialsResult - 49 - invalidCredentials - None - None - "
            "bindResponse - None",
            "auth",
            "ldap:49",
        ),
        ("ldap_sasl_bind(SIMPLE): Can't contact LDAP server (-1)", "transient", None),
        ("[LDAP: error code 51 - Busy]", "transient", None),
        ("[LDAP: error code 52 - Unavailable]", "transient", None),
        # near misses
        ("row 18456 of 20000 imported", "unknown", None),
        ("result 49 rows", "unknown", None),
    ],
)
def test_more_families(text: str, kind: str, code: str | None) -> None:
    result = classify_failure(text)
    assert (result.kind, result.code) == (kind, code), result.reason


def test_playbook_rules_come_first_and_can_keep_text_transient() -> None:
    from bot.actions.classify import ExtraRule, compile_rules

    rules = compile_rules(
        [
            ExtraRule(r"\bE_VAULT_DENIED\b", "auth", "vault:denied"),
            # A vendor's retryable 403 the built-ins would call auth.
            ExtraRule(r"ACCESS_REFUSED - queue '[a-z_]+' is being recreated", "transient"),
        ]
    )
    assert classify_failure("secret read: E_VAULT_DENIED", rules).code == "vault:denied"
    assert classify_failure("ACCESS_REFUSED - queue 'jobs' is being recreated", rules).kind == (
        "transient"
    )
    assert classify_failure("ACCESS_REFUSED - Login was refused", rules).kind == "auth"


@pytest.mark.parametrize(
    "pattern",
    [r"(a+)+$", r"(x|xy)*z", r"(\w+)\1", r"(?=a)b", r"(?<!a)b", r"(?P<w>a)(?P=w)", "", "x" * 301],
)
def test_super_linear_or_bad_rule_patterns_are_refused(pattern: str) -> None:
    from bot.actions.classify import check_rule_pattern

    with pytest.raises(ValueError):
        check_rule_pattern(pattern)


def test_hostile_long_text_is_clipped() -> None:
    from bot.actions.classify import MAX_TEXT

    text = "mongo " * 200_000 + "code: 18"
    assert len(text) > MAX_TEXT
    # The code sits past MAX_TEXT: never read, so "mongo ... code: 18" cannot match.
    assert classify_failure(text).kind == "unknown"
    assert classify_failure(text[-MAX_TEXT:]).code == "mongo:18"
