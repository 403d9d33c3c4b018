"""The production edge of the CDK app: HTTPS, TLS to the database, the migration task and its roles, the
metrics collector, the alarms, the health detail setting and the pinned base image."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import INFRA, Synth, load_app_module, synthesize
from tests.infra.test_stacks import attachment_of, container, env_of, grants, of_type, one, role_statements

pytestmark = pytest.mark.xdist_group("infra")

CERTIFICATE_ARN = "arn:aws:acm:eu-west-1:123456789012:certificate/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
RDS_CA_DIR = "/var/lib/txoutbox/rds-ca"
TASKS = ("api", "relay", "payments", "migrate")


def listeners(synth: Synth) -> dict[int, dict[str, Any]]:
    return {
        v["Properties"]["Port"]: v["Properties"]
        for v in of_type(synth.aurora, "AWS::ElasticLoadBalancingV2::Listener").values()
    }


def task_containers(synth: Synth, name: str) -> dict[str, dict[str, Any]]:
    _, td, _ = container(synth, name)
    return {c["Name"]: c for c in td["ContainerDefinitions"]}


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize(tmp_path_factory.mktemp("cdk-https"), certificateArn=CERTIFICATE_ARN)


# -- the load balancer's listeners ---------------------------------------------------------------------


def test_without_a_certificate_the_alb_serves_http_on_80_only(synth: Synth) -> None:
    [(port, listener)] = listeners(synth).items()
    assert (port, listener["Protocol"]) == (80, "HTTP")
    assert listener["DefaultActions"][0]["Type"] == "forward"


def test_with_a_certificate_the_alb_serves_https_and_http_redirects(https: Synth) -> None:
    found = listeners(https)
    assert set(found) == {443, 80}
    secure = found[443]
    assert secure["Protocol"] == "HTTPS"
    assert secure["Certificates"] == [{"CertificateArn": CERTIFICATE_ARN}]
    assert secure["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    assert secure["DefaultActions"][0]["Type"] == "forward"
    [redirect] = found[80]["DefaultActions"]
    assert found[80]["Protocol"] == "HTTP"
    assert redirect["Type"] == "redirect"
    assert redirect["RedirectConfig"] == {"Port": "443", "Protocol": "HTTPS", "StatusCode": "HTTP_301"}
    lb_id, _ = one(https.aurora, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert https.aurora["Outputs"]["AlbUrl"]["Value"] == {
        "Fn::Join": ["", ["https://", {"Fn::GetAtt": [lb_id, "DNSName"]}]]
    }
    # both ports open on the load balancer's security group (the WAF decides who gets through)
    _, lb = one(https.aurora, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    sg_id = lb["Properties"]["SecurityGroups"][0]["Fn::GetAtt"][0]
    ingress = https.aurora["Resources"][sg_id]["Properties"]["SecurityGroupIngress"]
    assert {(r["FromPort"], r["CidrIp"]) for r in ingress} == {(443, "0.0.0.0/0"), (80, "0.0.0.0/0")}


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"certificateArn": "arn:aws:iam::123456789012:server-certificate/x"}, "certificateArn"),
        ({"baseImage": "docker.io/library/debian:bookworm-slim"}, "baseImage"),
        ({"rdsCaBundleSha256": "not-a-digest"}, "rdsCaBundleSha256"),
    ],
)
def test_bad_context_is_refused_with_its_name(context: dict[str, str], message: str) -> None:
    app_module = load_app_module()
    import aws_cdk as cdk

    with pytest.raises(ValueError, match=message):
        app_module.build(cdk.App(context=context))


# -- TLS to the database --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TASKS)
def test_every_task_verifies_the_database_against_the_rds_ca_bundle(synth: Synth, name: str) -> None:
    _, td, _ = container(synth, name)
    containers = task_containers(synth, name)
    main = containers[name]
    env = env_of(main)
    assert env["PGSSLMODE"] == "verify-full"
    assert env["PGSSLROOTCERT"] == f"{RDS_CA_DIR}/global-bundle.pem"
    # the bundle is put in place by the init container, which must succeed before the service starts
    init = containers["rds-ca"]
    assert init["Essential"] is False
    assert init["EntryPoint"] == ["python", "-c"]
    assert init["Command"] == [(INFRA / "database" / "fetch_rds_ca.py").read_text()]
    init_env = env_of(init)
    assert (
        init_env["RDS_CA_BUNDLE_URL"] == "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
    )
    assert init_env["PGSSLROOTCERT"] == env["PGSSLROOTCERT"]
    assert {"ContainerName": "rds-ca", "Condition": "SUCCESS"} in main["DependsOn"]
    assert init["MountPoints"] == [{"ContainerPath": RDS_CA_DIR, "ReadOnly": False, "SourceVolume": "rds-ca"}]
    assert main["MountPoints"] == [{"ContainerPath": RDS_CA_DIR, "ReadOnly": True, "SourceVolume": "rds-ca"}]
    assert td["Volumes"] == [{"Name": "rds-ca"}]
    assert main["Image"] == init["Image"]  # the app's own image: no other image to trust


def test_the_rds_ca_bundle_digest_can_be_pinned(tmp_path: Path) -> None:
    digest = "a" * 64
    synth = synthesize(tmp_path, rdsCaBundleSha256=digest)
    for name in TASKS:
        assert env_of(task_containers(synth, name)["rds-ca"])["RDS_CA_BUNDLE_SHA256"] == digest


# -- the migration task and the service roles -------------------------------------------------------------


def test_the_migration_task_applies_migrations_and_roles_as_the_master_user(synth: Synth) -> None:
    _, td, migrate = container(synth, "migrate")
    assert migrate["EntryPoint"] == ["python"]
    assert migrate["Command"] == ["-c", (INFRA / "database" / "apply_roles.py").read_text()]
    env = env_of(migrate)
    roles_sql = (INFRA / "database" / "service_roles.sql").read_text()
    assert env["TXOUTBOX_ROLES_SQL"] == roles_sql
    assert not re.search(r"PASSWORD\s+'", roles_sql, re.IGNORECASE)  # passwords are set by the program
    master = attachment_of(synth, "dbaadmin")
    secrets = {s["Name"]: s["ValueFrom"] for s in migrate["Secrets"]}
    assert secrets["PGUSER"] == {"Fn::Join": ["", [{"Ref": master}, ":username::"]]}
    for role in ("txoutbox_api", "txoutbox_relay", "txoutbox_payments"):
        assert secrets[f"{role.upper()}_PASSWORD"] == {
            "Fn::Join": ["", [{"Ref": attachment_of(synth, role)}, ":password::"]]
        }
    # no migrate task runs as a service; the task role has no AWS permissions
    assert all(
        v["Properties"]["TaskDefinition"] != {"Ref": container(synth, "migrate")[0]}
        for v in of_type(synth.aurora, "AWS::ECS::Service").values()
    )
    assert role_statements(synth, td["TaskRoleArn"]["Fn::GetAtt"][0]) == []


def test_the_migration_runner_may_only_run_that_task_and_watch_it(synth: Synth) -> None:
    migrate_tid, _, _ = container(synth, "migrate")
    lambdas = {
        v["Properties"]["Handler"]: v["Properties"]
        for v in of_type(synth.aurora, "AWS::Lambda::Function").values()
        if v["Properties"].get("Handler", "").startswith("handler.")
    }
    assert set(lambdas) == {"handler.on_event", "handler.is_complete"}
    for handler, props in lambdas.items():
        role_id = props["Role"]["Fn::GetAtt"][0]
        role = synth.aurora["Resources"][role_id]["Properties"]
        [basic] = role["ManagedPolicyArns"]  # its own logs only
        assert basic["Fn::Join"][1][-1].endswith(":iam::aws:policy/service-role/AWSLambdaBasicExecutionRole")
        statements = [
            s
            for p in of_type(synth.aurora, "AWS::IAM::Policy").values()
            if {"Ref": role_id} in p["Properties"]["Roles"]
            for s in p["Properties"]["PolicyDocument"]["Statement"]
        ]
        by_action = {json.dumps(s["Action"]): s for s in statements}
        if handler == "handler.on_event":
            assert by_action['"ecs:RunTask"']["Resource"] == {"Ref": migrate_tid}
            assert set(by_action) == {'"ecs:RunTask"', '"iam:PassRole"'}
        else:
            assert set(by_action) == {'"ecs:DescribeTasks"'}
        for statement in statements:
            if statement["Action"].startswith("ecs:"):
                assert "ecs:cluster" in statement["Condition"]["ArnEquals"]


def test_the_runner_source_is_the_lambda_code(synth: Synth) -> None:
    handler = (INFRA / "migration_runner" / "handler.py").read_text()
    assert "def on_event(" in handler
    assert "def is_complete(" in handler
    assert "exitCode" in handler  # the deployment fails unless every container exited 0


# -- metrics, alarms, health -----------------------------------------------------------------------------


def test_an_adot_collector_beside_the_relay_exports_its_metrics_to_cloudwatch(synth: Synth) -> None:
    containers = task_containers(synth, "relay")
    relay_env = env_of(containers["relay"])
    assert relay_env["TXOUTBOX_METRICS_PORT"] == "9464"
    assert "TXOUTBOX_METRICS_HOST" not in relay_env  # 127.0.0.1: only the task itself can scrape it
    collector = containers["metrics-collector"]
    assert collector["Image"].startswith("public.ecr.aws/aws-observability/aws-otel-collector:v")
    assert collector["Essential"] is False
    raw = env_of(collector)["AOT_CONFIG_CONTENT"]
    group_id = next(k for k in of_type(synth.aurora, "AWS::Logs::LogGroup") if k.startswith("MetricsLogs"))
    assert raw["Fn::Join"][1][1] == {"Ref": group_id}  # the EMF log group, resolved at deployment
    config = json.loads("".join(p if isinstance(p, str) else "GROUP" for p in raw["Fn::Join"][1]))
    [scrape] = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    assert scrape["static_configs"] == [{"targets": ["127.0.0.1:9464"], "labels": {"Service": "relay"}}]
    emf = config["exporters"]["awsemf"]
    assert emf["namespace"] == "txoutbox"
    assert emf["log_group_name"] == "GROUP"
    [declaration] = emf["metric_declarations"]
    assert declaration["dimensions"] == [["Service"]]
    selected = {s.strip("^$") for s in declaration["metric_name_selectors"]}
    assert selected >= {"txoutbox_backlog", "txoutbox_oldest_event_age_seconds", "txoutbox_circuit_state"}
    assert config["service"]["pipelines"]["metrics"]["exporters"] == ["awsemf"]
    # the names exported are the relay's real metric names
    from txoutbox.metrics import RelayMetrics

    registered = {m.name for m in RelayMetrics().registry.collect()}
    assert selected <= registered


def alarms_by_metric(synth: Synth) -> dict[str, dict[str, Any]]:
    return {
        a["Properties"]["MetricName"]: a["Properties"]
        for a in of_type(synth.aurora, "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["MetricName"] != "txoutbox_backlog"  # those drive the relay's scaling
    }


def test_alarms_on_oldest_event_circuit_dead_letters_and_the_dlq(synth: Synth) -> None:
    alarms = alarms_by_metric(synth)
    topic_id, _ = one(synth.aurora, "AWS::SNS::Topic")
    age = alarms["txoutbox_oldest_event_age_seconds"]
    assert (age["Namespace"], age["Statistic"], age["Threshold"]) == ("txoutbox", "Maximum", 300)
    assert age["TreatMissingData"] == "breaching"  # no relay reporting is an alarm too
    circuit = alarms["txoutbox_circuit_state"]
    assert (circuit["Threshold"], circuit["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    assert alarms["txoutbox_dead_letters"]["Threshold"] == 1
    for name in ("txoutbox_oldest_event_age_seconds", "txoutbox_circuit_state", "txoutbox_dead_letters"):
        assert alarms[name]["Dimensions"] == [{"Name": "Service", "Value": "relay"}]
    dlq = alarms["ApproximateNumberOfMessagesVisible"]
    assert dlq["Namespace"] == "AWS/SQS"  # SQS's own metric
    assert dlq["Threshold"] == 1
    [dimension] = dlq["Dimensions"]
    assert dimension["Name"] == "QueueName"
    queue_age = alarms["ApproximateAgeOfOldestMessage"]
    assert queue_age["Namespace"] == "AWS/SQS"
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [{"Ref": topic_id}]
        assert alarm["OKActions"] == [{"Ref": topic_id}]


def test_the_dlq_alarm_watches_the_dead_letter_queue(synth: Synth) -> None:
    dimension = alarms_by_metric(synth)["ApproximateNumberOfMessagesVisible"]["Dimensions"][0]["Value"]
    name = dimension["Fn::ImportValue"]
    [output] = [o for o in synth.base["Outputs"].values() if o.get("Export", {}).get("Name") == name]
    dlq_id = output["Value"]["Fn::GetAtt"][0]
    assert synth.base["Resources"][dlq_id]["Properties"]["QueueName"] == "flightDLQ.fifo"


def test_health_behind_the_load_balancer_gives_no_detail(synth: Synth) -> None:
    env = env_of(container(synth, "api")[2])
    assert env["TXOUTBOX_HEALTH_DETAIL"] == "never"
    from flights.settings import ApiSettings  # the value is one the booking API accepts

    assert ApiSettings.from_env(env).health_detail == "never"


def test_the_api_task_role_still_has_no_permissions(synth: Synth) -> None:
    assert grants(synth, "api") == {}
