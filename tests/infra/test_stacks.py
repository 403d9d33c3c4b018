"""The CDK app's two stacks, synthesized in-process and checked resource by resource."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import INFRA, Synth, load_app_module, synthesize

# One worker synthesizes the app for all the tests of this module (`make test` runs --dist loadgroup).
pytestmark = pytest.mark.xdist_group("infra")

QUEUE_ACTIONS_RELAY = {"sqs:SendMessage"}
QUEUE_ACTIONS_PAYMENTS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
}
DLQ_ACTIONS_PAYMENTS = {"sqs:ReceiveMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"}
COMMON_ENV = {"SQS_QUEUE_URL", "SQS_DLQ_URL", "AWS_REGION", "LOG_FORMAT", "PGSSLMODE", "PGSSLROOTCERT"}
RDS_CA_FILE = "/var/lib/txoutbox/rds-ca/global-bundle.pem"
ROLES = {"api": "txoutbox_api", "relay": "txoutbox_relay", "payments": "txoutbox_payments"}
PG_SECRETS = {"PGHOST": "host", "PGPORT": "port", "PGDATABASE": "dbname", "PGUSER": "username"}
PG_SECRETS["PGPASSWORD"] = "password"


# -- helpers -------------------------------------------------------------------------------------------


def of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def one(template: dict[str, Any], type_: str) -> tuple[str, dict[str, Any]]:
    found = of_type(template, type_)
    assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
    return next(iter(found.items()))


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every (path, key, value) of a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}/{key}", key, value
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def exported(synth: Synth, value: Any) -> Any:
    """What an `Fn::ImportValue` of BaseStack's exports stands for in BaseStack (else the value itself)."""
    if not (isinstance(value, dict) and "Fn::ImportValue" in value):
        return value
    name = value["Fn::ImportValue"]
    for output in synth.base["Outputs"].values():
        if output.get("Export", {}).get("Name") == name:
            return output["Value"]
    raise AssertionError(f"{name} is not exported by BaseStack")


def queue_ids(synth: Synth) -> tuple[str, str]:
    """Logical ids of (flightQueue.fifo, flightDLQ.fifo)."""
    by_name = {r["Properties"]["QueueName"]: k for k, r in of_type(synth.base, "AWS::SQS::Queue").items()}
    return by_name["flightQueue.fifo"], by_name["flightDLQ.fifo"]


def container(synth: Synth, name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(task definition id, task definition properties, container definition) of one service."""
    for tid, td in of_type(synth.aurora, "AWS::ECS::TaskDefinition").items():
        for c in td["Properties"]["ContainerDefinitions"]:
            if c["Name"] == name:
                return tid, td["Properties"], c
    raise AssertionError(f"no container {name!r}")


def service_of(synth: Synth, name: str) -> dict[str, Any]:
    tid, _, _ = container(synth, name)
    for svc in of_type(synth.aurora, "AWS::ECS::Service").values():
        if svc["Properties"]["TaskDefinition"] == {"Ref": tid}:
            return svc["Properties"]
    raise AssertionError(f"no service runs {name!r}")


def role_statements(synth: Synth, role_id: str) -> list[dict[str, Any]]:
    """Every statement of every policy a role has (attached AWS::IAM::Policy and inline)."""
    role = synth.aurora["Resources"][role_id]["Properties"]
    assert not role.get("ManagedPolicyArns"), f"{role_id} has managed policies"
    statements = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
    for policy in of_type(synth.aurora, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def task_role_id(synth: Synth, name: str) -> str:
    _, td, _ = container(synth, name)
    return str(td["TaskRoleArn"]["Fn::GetAtt"][0])


def grants(synth: Synth, name: str) -> dict[str, set[str]]:
    """{resource (as BaseStack sees it, JSON): actions} of one service's task role."""
    result: dict[str, set[str]] = {}
    for s in role_statements(synth, task_role_id(synth, name)):
        assert s["Effect"] == "Allow"
        assert not {"Condition", "NotAction", "NotResource"} & s.keys()
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        for r in resources:
            result.setdefault(json.dumps(exported(synth, r), sort_keys=True), set()).update(actions(s))
    return result


def attachment_of(synth: Synth, username: str) -> str:
    """Logical id of the cluster-attached secret of one database user."""
    for secret_id, secret in of_type(synth.aurora, "AWS::SecretsManager::Secret").items():
        template = json.loads(secret["Properties"]["GenerateSecretString"]["SecretStringTemplate"])
        if template["username"] == username:
            [attachment_id] = [
                k
                for k, v in of_type(synth.aurora, "AWS::SecretsManager::SecretTargetAttachment").items()
                if v["Properties"]["SecretId"] == {"Ref": secret_id}
            ]
            return attachment_id
    raise AssertionError(f"no secret for {username}")


def env_of(container_definition: dict[str, Any]) -> dict[str, Any]:
    return {e["Name"]: e["Value"] for e in container_definition.get("Environment", [])}


def arn_of(logical_id: str) -> str:
    return json.dumps({"Fn::GetAtt": [logical_id, "Arn"]}, sort_keys=True)


# -- BaseStack -----------------------------------------------------------------------------------------


def test_the_stacks_have_the_seed_names_and_the_ip_parameter(synth: Synth) -> None:
    manifest = json.loads((synth.assembly_dir / "manifest.json").read_text())
    stacks = {k for k, v in manifest["artifacts"].items() if v["type"] == "aws:cloudformation:stack"}
    assert stacks == {"BaseStack", "AuroraStack"}
    param = synth.base["Parameters"]["myPublicIP"]
    assert param["Type"] == "String"
    pattern = re.compile(param["AllowedPattern"])
    assert pattern.match("203.0.113.7/32")
    assert not pattern.match("203.0.113.7")
    assert not pattern.match("0.0.0.0/0; drop")
    assert not pattern.match("0.0.0.0/0")  # the whole internet: only with -c allowAnyIp=true
    assert not pattern.match("203.0.113.7/0")


def test_queues_are_fifo_encrypted_and_redriven(synth: Synth) -> None:
    queue_id, dlq_id = queue_ids(synth)
    queue = synth.base["Resources"][queue_id]["Properties"]
    dlq = synth.base["Resources"][dlq_id]["Properties"]
    for props in (queue, dlq):
        assert props["FifoQueue"] is True
        assert props["SqsManagedSseEnabled"] is True
        assert "KmsMasterKeyId" not in props  # SSE-SQS: no key policy for the task roles to need
    assert queue["ContentBasedDeduplication"] is False  # the relay sets the deduplication id (event id)
    assert queue["VisibilityTimeout"] == 30
    assert queue["MaximumMessageSize"] == 262_144
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": 10,
    }
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert "RedrivePolicy" not in dlq


def test_queues_refuse_plain_http(synth: Synth) -> None:
    policies = of_type(synth.base, "AWS::SQS::QueuePolicy")
    assert len(policies) == 2
    for policy in policies.values():
        [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Effect"] == "Deny"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_vpc_has_two_azs_one_nat_and_flow_logs(synth: Synth) -> None:
    synth.base_template.resource_count_is("AWS::EC2::VPC", 1)
    synth.base_template.resource_count_is("AWS::EC2::NatGateway", 1)
    subnets = of_type(synth.base, "AWS::EC2::Subnet").values()
    azs = {json.dumps(s["Properties"]["AvailabilityZone"], sort_keys=True) for s in subnets}
    assert len(azs) == 2
    assert len(subnets) == 6  # public, private with egress (services), isolated (database) x 2 AZs
    _, flow_log = one(synth.base, "AWS::EC2::FlowLog")
    props = flow_log["Properties"]
    assert props["ResourceType"] == "VPC"
    assert props["TrafficType"] == "ALL"
    assert props["LogDestinationType"] == "cloud-watch-logs"
    log_group_id = props["LogGroupName"]["Ref"]
    assert synth.base["Resources"][log_group_id]["Properties"]["RetentionInDays"] > 0


def test_waf_rate_limits_applies_managed_rules_then_allows_only_my_ip(synth: Synth) -> None:
    ip_set_id, ip_set = one(synth.base, "AWS::WAFv2::IPSet")
    assert ip_set["Properties"]["Addresses"] == [{"Ref": "myPublicIP"}]
    assert ip_set["Properties"]["Scope"] == "REGIONAL"
    _, acl = one(synth.base, "AWS::WAFv2::WebACL")
    props = acl["Properties"]
    assert props["Scope"] == "REGIONAL"
    assert props["DefaultAction"] == {"Block": {}}
    rules = sorted(props["Rules"], key=lambda r: r["Priority"])
    assert [r["Name"] for r in rules] == [
        "RateLimitPerIp",
        "AWSManagedRulesCommonRuleSet",
        "AWSManagedRulesKnownBadInputsRuleSet",
        "AWSManagedRulesSQLiRuleSet",
        "AllowMyPublicIP",
    ]
    rate = rules[0]
    assert rate["Action"] == {"Block": {}}
    assert rate["Statement"]["RateBasedStatement"] == {
        "Limit": 1000,
        "AggregateKeyType": "IP",
        "EvaluationWindowSec": 300,
    }
    for managed in rules[1:4]:
        assert managed["OverrideAction"] == {"None": {}}  # the groups' own block actions apply
        assert managed["Statement"]["ManagedRuleGroupStatement"] == {
            "VendorName": "AWS",
            "Name": managed["Name"],
        }
        assert "Action" not in managed
    allow = rules[-1]
    assert allow["Action"] == {"Allow": {}}
    assert allow["Statement"] == {"IPSetReferenceStatement": {"Arn": {"Fn::GetAtt": [ip_set_id, "Arn"]}}}
    for rule in rules:
        assert rule["VisibilityConfig"]["CloudWatchMetricsEnabled"] is True


def test_the_whole_internet_is_allowed_only_when_asked_for_by_name(tmp_path: Path) -> None:
    synth = synthesize(tmp_path, allowAnyIp="true")
    pattern = re.compile(synth.base["Parameters"]["myPublicIP"]["AllowedPattern"])
    assert pattern.match("0.0.0.0/0")
    assert pattern.match("203.0.113.7/32")
    app_module = load_app_module()
    import aws_cdk as cdk

    with pytest.raises(ValueError, match="allowAnyIp"):
        app_module.build(cdk.App(context={"allowAnyIp": "yes"}))


def test_ecs_cluster_has_container_insights(synth: Synth) -> None:
    _, cluster = one(synth.base, "AWS::ECS::Cluster")
    assert {"Name": "containerInsights", "Value": "enabled"} in cluster["Properties"]["ClusterSettings"]


# -- AuroraStack: database ------------------------------------------------------------------------------


def test_database_is_serverless_v2_encrypted_protected_and_snapshotted(synth: Synth) -> None:
    _, cluster = one(synth.aurora, "AWS::RDS::DBCluster")
    props = cluster["Properties"]
    assert props["Engine"] == "aurora-postgresql"
    assert props["EngineVersion"].startswith("16.")
    assert props["DatabaseName"] == "outboxPattern"
    assert props["StorageEncrypted"] is True
    assert props["DeletionProtection"] is True
    assert props["BackupRetentionPeriod"] == 14
    assert props["ServerlessV2ScalingConfiguration"]["MinCapacity"] == 0.5
    assert cluster["DeletionPolicy"] == "Snapshot"
    assert cluster["UpdateReplacePolicy"] == "Snapshot"
    _, instance = one(synth.aurora, "AWS::RDS::DBInstance")
    assert instance["Properties"]["DBInstanceClass"] == "db.serverless"
    assert instance["Properties"]["PubliclyAccessible"] is False
    _, params = one(synth.aurora, "AWS::RDS::DBClusterParameterGroup")
    assert params["Properties"]["Parameters"]["rds.force_ssl"] == "1"


def test_database_lives_in_isolated_subnets(synth: Synth) -> None:
    _, group = one(synth.aurora, "AWS::RDS::DBSubnetGroup")
    subnets = [exported(synth, s)["Ref"] for s in group["Properties"]["SubnetIds"]]
    assert len(subnets) == 2
    for subnet_id in subnets:
        tags = {t["Key"]: t["Value"] for t in synth.base["Resources"][subnet_id]["Properties"]["Tags"]}
        assert tags["aws-cdk:subnet-type"] == "Isolated"


def test_credentials_are_generated_in_secrets_manager(synth: Synth) -> None:
    """The master user's secret, and one per service role; every password generated, none in the template."""
    secrets = of_type(synth.aurora, "AWS::SecretsManager::Secret")
    users = {}
    for secret_id, secret in secrets.items():
        generate = secret["Properties"]["GenerateSecretString"]
        template = json.loads(generate["SecretStringTemplate"])
        assert template["dbname"] == "outboxPattern"
        assert generate["GenerateStringKey"] == "password"
        assert "SecretString" not in secret["Properties"]
        users[template["username"]] = (secret_id, secret)
    assert set(users) == {"dbaadmin", *ROLES.values()}
    master_id, master = users["dbaadmin"]
    assert master["DeletionPolicy"] == "Retain"  # it holds the password of the final snapshot
    _, cluster = one(synth.aurora, "AWS::RDS::DBCluster")
    assert cluster["Properties"]["MasterUserPassword"] == {
        "Fn::Join": ["", ["{{resolve:secretsmanager:", {"Ref": master_id}, ":SecretString:password::}}"]]
    }
    cluster_id, _ = one(synth.aurora, "AWS::RDS::DBCluster")
    for user in users:
        attachment = synth.aurora["Resources"][attachment_of(synth, user)]["Properties"]
        assert attachment["TargetId"] == {"Ref": cluster_id}  # host and port written into the secret


@pytest.mark.parametrize("stack", ["base", "aurora"])
def test_no_plain_text_password_anywhere(synth: Synth, stack: str) -> None:
    template = getattr(synth, stack)
    for path, key, value in walk(template):
        if re.search("passw(or)?d", str(key), re.IGNORECASE):
            assert not isinstance(value, str), f"{path} holds a literal: {value!r}"
            if key == "MasterUserPassword":
                assert "{{resolve:secretsmanager:" in json.dumps(value), path
        if isinstance(value, dict) and value.keys() == {"Name", "Value"}:  # container environment
            assert not re.search("PASSW(OR)?D", str(value["Name"]).upper()), f"{path}: a password in clear"


# -- AuroraStack: services ------------------------------------------------------------------------------


def test_three_fargate_services_from_one_image(synth: Synth) -> None:
    synth.aurora_template.resource_count_is("AWS::ECS::Service", 3)
    images = set()
    for name, desired in (("api", 2), ("relay", 2), ("payments", 1)):
        svc = service_of(synth, name)
        assert svc["DesiredCount"] == desired
        assert svc["LaunchType"] == "FARGATE"
        assert svc["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
        assert svc["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {
            "Enable": True,
            "Rollback": True,
        }
        _, _, c = container(synth, name)
        images.add(json.dumps(c["Image"], sort_keys=True))
    assert len(images) == 1


def test_the_services_start_after_the_migration_task_has_succeeded(synth: Synth) -> None:
    migration_id, migration = one(synth.aurora, "Custom::TxoutboxMigration")
    for name in ("api", "relay", "payments"):
        tid = container(synth, name)[0]
        [svc] = [
            v
            for v in of_type(synth.aurora, "AWS::ECS::Service").values()
            if v["Properties"]["TaskDefinition"] == {"Ref": tid}
        ]
        assert migration_id in svc.get("DependsOn", [])
    cluster_id, _ = one(synth.aurora, "AWS::RDS::DBCluster")
    instance_id, _ = one(synth.aurora, "AWS::RDS::DBInstance")
    assert {cluster_id, instance_id} <= set(migration["DependsOn"])
    # a new image or new role SQL is a new task definition revision: the task runs again
    migrate_tid, _, _ = container(synth, "migrate")
    assert migration["Properties"]["TaskDefinitionArn"] == {"Ref": migrate_tid}
    sg_id = migration["Properties"]["SecurityGroups"][0]["Fn::GetAtt"][0]
    assert "migration" in synth.aurora["Resources"][sg_id]["Properties"]["GroupDescription"]


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("api", ["api", "--host", "0.0.0.0", "--port", "8080"]),  # no --migrate: its role may not
        ("relay", ["relay"]),
        ("payments", ["payments"]),
    ],
)
def test_containers_commands_environment_and_secrets(synth: Synth, name: str, command: list[str]) -> None:
    _, td, c = container(synth, name)
    assert c["Command"] == command  # arguments of the image's ENTRYPOINT ["txoutbox"]
    assert "EntryPoint" not in c
    env = env_of(c)
    assert env.keys() >= COMMON_ENV
    assert env["LOG_FORMAT"] == "json"
    assert env["PGSSLMODE"] == "verify-full"  # the server's certificate and name are verified
    assert env["PGSSLROOTCERT"] == RDS_CA_FILE
    assert env["AWS_REGION"] == {"Ref": "AWS::Region"}
    queue_id, dlq_id = queue_ids(synth)
    assert exported(synth, env["SQS_QUEUE_URL"]) == {"Ref": queue_id}
    assert exported(synth, env["SQS_DLQ_URL"]) == {"Ref": dlq_id}
    assert not {"DATABASE_URL", *PG_SECRETS} & env.keys()
    attachment_id = attachment_of(synth, ROLES[name])  # the service's own role, not the master user
    secrets = {s["Name"]: s["ValueFrom"] for s in c["Secrets"]}
    assert secrets == {
        var: {"Fn::Join": ["", [{"Ref": attachment_id}, f":{field}::"]]} for var, field in PG_SECRETS.items()
    }
    assert c["LinuxParameters"]["InitProcessEnabled"] is True
    assert td["RuntimePlatform"] == {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"}
    assert td["RequiresCompatibilities"] == ["FARGATE"]


def test_relay_serves_metrics_and_api_listens_on_8080(synth: Synth) -> None:
    relay_env = {e["Name"]: e["Value"] for e in container(synth, "relay")[2]["Environment"]}
    assert relay_env["TXOUTBOX_METRICS_PORT"] == "9464"
    assert container(synth, "api")[2]["PortMappings"] == [{"ContainerPort": 8080, "Protocol": "tcp"}]


def test_each_execution_role_may_read_only_its_own_db_secret(synth: Synth) -> None:
    attachments = {u: attachment_of(synth, u) for u in ("dbaadmin", *ROLES.values())}
    for name, users in (*((n, {r}) for n, r in ROLES.items()), ("migrate", set(attachments))):
        _, td, _ = container(synth, name)
        statements = role_statements(synth, td["ExecutionRoleArn"]["Fn::GetAtt"][0])
        readable = {
            json.dumps(r)
            for s in statements
            if "secretsmanager:GetSecretValue" in actions(s)
            for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
        }
        assert readable == {json.dumps({"Ref": attachments[u]}) for u in users}, name
        assert not any(a.startswith("sqs:") for s in statements for a in actions(s))


def test_log_groups_have_a_retention(synth: Synth) -> None:
    for template in (synth.base, synth.aurora):
        for lid, group in of_type(template, "AWS::Logs::LogGroup").items():
            assert group["Properties"].get("RetentionInDays", 0) > 0, lid
    for name in ("api", "relay", "payments"):
        options = container(synth, name)[2]["LogConfiguration"]
        assert options["LogDriver"] == "awslogs"
        group_id = options["Options"]["awslogs-group"]["Ref"]
        assert synth.aurora["Resources"][group_id]["Properties"]["RetentionInDays"] == 30


# -- least privilege ------------------------------------------------------------------------------------


def test_relay_may_only_send_to_the_queue_and_write_its_metrics(synth: Synth) -> None:
    queue_id, _ = queue_ids(synth)
    group_id = next(k for k in of_type(synth.aurora, "AWS::Logs::LogGroup") if k.startswith("MetricsLogs"))
    assert grants(synth, "relay") == {
        arn_of(queue_id): QUEUE_ACTIONS_RELAY,
        arn_of(group_id): {"logs:CreateLogStream", "logs:PutLogEvents"},  # the collector's EMF logs
    }


def test_payments_may_only_consume_the_queue_and_read_the_dlq(synth: Synth) -> None:
    queue_id, dlq_id = queue_ids(synth)
    assert grants(synth, "payments") == {
        arn_of(queue_id): QUEUE_ACTIONS_PAYMENTS,
        arn_of(dlq_id): DLQ_ACTIONS_PAYMENTS,
    }


def test_api_task_role_has_no_permissions(synth: Synth) -> None:
    assert role_statements(synth, task_role_id(synth, "api")) == []


def test_each_service_has_its_own_task_role(synth: Synth) -> None:
    roles = {task_role_id(synth, n) for n in ("api", "relay", "payments")}
    assert len(roles) == 3
    for role_id in roles:
        trust = synth.aurora["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust == [
            {
                "Action": "sts:AssumeRole",
                "Effect": "Allow",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            }
        ]


def test_only_the_services_reach_the_database(synth: Synth) -> None:
    _, cluster = one(synth.aurora, "AWS::RDS::DBCluster")
    [db_sg] = cluster["Properties"]["VpcSecurityGroupIds"]
    db_sg_id = db_sg["Fn::GetAtt"][0]
    assert not synth.aurora["Resources"][db_sg_id]["Properties"].get("SecurityGroupIngress")
    rules = [
        r["Properties"]
        for r in of_type(synth.aurora, "AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [db_sg_id, "GroupId"]}
    ]
    service_sgs = {
        json.dumps(sg)
        for name in ("api", "relay", "payments")
        for sg in service_of(synth, name)["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"]
    }
    _, migration = one(synth.aurora, "Custom::TxoutboxMigration")
    service_sgs |= {json.dumps(sg) for sg in migration["Properties"]["SecurityGroups"]}
    assert len(service_sgs) == 4
    assert {json.dumps(r["SourceSecurityGroupId"]) for r in rules} == service_sgs
    for rule in rules:
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 5432, 5432)
        assert not {"CidrIp", "CidrIpv6", "SourcePrefixListId"} & rule.keys()


# -- the load balancer ----------------------------------------------------------------------------------


def test_alb_is_public_checks_slash_and_is_behind_the_waf(synth: Synth) -> None:
    lb_id, lb = one(synth.aurora, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert lb["Properties"]["Scheme"] == "internet-facing"
    _, tg = one(synth.aurora, "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert tg["Properties"]["HealthCheckPath"] == "/"
    assert tg["Properties"]["TargetType"] == "ip"
    assert service_of(synth, "api")["LoadBalancers"][0]["ContainerPort"] == 8080
    _, association = one(synth.aurora, "AWS::WAFv2::WebACLAssociation")
    assert association["Properties"]["ResourceArn"] == {"Ref": lb_id}
    acl_id, _ = one(synth.base, "AWS::WAFv2::WebACL")
    assert exported(synth, association["Properties"]["WebACLArn"]) == {"Fn::GetAtt": [acl_id, "Arn"]}


def scaling_of(synth: Synth, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(scalable target, its scaling policies) of one service."""
    service_id = next(
        k
        for k, v in of_type(synth.aurora, "AWS::ECS::Service").items()
        if v["Properties"]["TaskDefinition"] == {"Ref": container(synth, name)[0]}
    )
    for target_id, target in of_type(synth.aurora, "AWS::ApplicationAutoScaling::ScalableTarget").items():
        if service_id in json.dumps(target["Properties"]["ResourceId"]):
            policies = [
                p["Properties"]
                for p in of_type(synth.aurora, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
                if p["Properties"]["ScalingTargetId"] == {"Ref": target_id}
            ]
            return target["Properties"], policies
    raise AssertionError(f"{name} does not scale")


def test_api_scales_on_cpu_from_2_to_6_at_45_percent(synth: Synth) -> None:
    target, [policy] = scaling_of(synth, "api")
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 6)
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == 45
    assert (
        config["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    )


def test_relay_scales_out_on_the_backlog(synth: Synth) -> None:
    target, policies = scaling_of(synth, "relay")
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 6)
    steps = {}
    for policy in policies:
        config = policy["StepScalingPolicyConfiguration"]
        assert config["AdjustmentType"] == "ChangeInCapacity"
        for step in config["StepAdjustments"]:
            steps[step["ScalingAdjustment"]] = step
    assert set(steps) == {-1, 1, 2}
    # the alarms driving the policies watch the largest backlog a relay reports
    alarms = [
        a["Properties"]
        for a in of_type(synth.aurora, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == "txoutbox_backlog"
    ]
    assert sorted(a["Threshold"] for a in alarms) == [100, 1000]
    for alarm in alarms:
        assert alarm["Namespace"] == "txoutbox"
        assert alarm["Dimensions"] == [{"Name": "Service", "Value": "relay"}]
        assert alarm["Statistic"] == "Maximum"
        [action] = alarm["AlarmActions"]
        assert action["Ref"] in {
            k
            for k, v in of_type(synth.aurora, "AWS::ApplicationAutoScaling::ScalingPolicy").items()
            if v["Properties"] in policies
        }


# -- outputs and the image asset ---------------------------------------------------------------------------


def test_outputs(synth: Synth) -> None:
    outputs = synth.aurora["Outputs"]
    lb_id, _ = one(synth.aurora, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    dns = {"Fn::GetAtt": [lb_id, "DNSName"]}
    assert outputs["AlbUrl"]["Value"] == {"Fn::Join": ["", ["http://", dns]]}
    assert outputs["SwaggerUrl"]["Value"] == {"Fn::Join": ["", ["http://", dns, "/swagger-ui/index.html"]]}
    queue_id, dlq_id = queue_ids(synth)
    assert exported(synth, outputs["QueueUrl"]["Value"]) == {"Ref": queue_id}
    assert exported(synth, outputs["DlqUrl"]["Value"]) == {"Ref": dlq_id}
    assert outputs["DbSecretArn"]["Value"] == {"Ref": attachment_of(synth, "dbaadmin")}
    cluster_id, _ = one(synth.aurora, "AWS::RDS::DBCluster")
    assert outputs["DbClusterEndpoint"]["Value"] == {"Fn::GetAtt": [cluster_id, "Endpoint.Address"]}
    for name in (
        "EcsClusterName",
        "ApiTaskDefinitionArn",
        "RelayTaskDefinitionArn",
        "MigrationTaskDefinitionArn",
        "AppSubnetIds",
        "ApiSecurityGroupId",
        "RelaySecurityGroupId",
        "MigrationSecurityGroupId",
        "MigrationLogGroupName",
        "AlarmTopicArn",
    ):
        assert name in outputs  # what `aws ecs run-task` needs for one-off CLI commands, and the alarms
    assert outputs["RelayTaskRoleName"]["Value"] == {"Ref": task_role_id(synth, "relay")}
    assert (
        outputs["PaymentsLogGroupName"]["Value"]
        == container(synth, "payments")[2]["LogConfiguration"]["Options"]["awslogs-group"]
    )


def test_image_is_built_from_the_repository_root_with_a_small_context(synth: Synth) -> None:
    assets = json.loads((synth.assembly_dir / "AuroraStack.assets.json").read_text())
    [image] = assets["dockerImages"].values()
    assert image["source"]["dockerFile"] == "Dockerfile"
    assert image["source"]["platform"] == "linux/arm64"
    # the base image is a build argument, pinned by digest
    assert re.fullmatch(
        r"docker\.io/library/debian:bookworm-slim@sha256:[0-9a-f]{64}",
        image["source"]["dockerBuildArgs"]["BASE_IMAGE"],
    )
    staged = {p.name for p in (synth.assembly_dir / image["source"]["directory"]).iterdir()}
    assert staged == {"Dockerfile", ".dockerignore", "pyproject.toml", "uv.lock", "README.md", "src"}
    staged_files = list((synth.assembly_dir / image["source"]["directory"]).rglob("*"))
    assert not [p for p in staged_files if "__pycache__" in p.parts or p.suffix == ".pyc"]


def test_x86_64_can_be_chosen_consistently(tmp_path: Path) -> None:
    synth = synthesize(tmp_path, cpuArchitecture="x86_64")
    for name in ("api", "relay", "payments"):
        assert container(synth, name)[1]["RuntimePlatform"]["CpuArchitecture"] == "X86_64"
    assets = json.loads((tmp_path / "AuroraStack.assets.json").read_text())
    [image] = assets["dockerImages"].values()
    assert image["source"]["platform"] == "linux/amd64"


def test_an_unknown_architecture_is_refused() -> None:
    app_module = load_app_module()
    import aws_cdk as cdk

    app = cdk.App(context={"cpuArchitecture": "sparc"})
    with pytest.raises(ValueError, match="cpuArchitecture"):
        app_module.build(app)


# -- the CDK project files -----------------------------------------------------------------------------


def test_cdk_json_runs_the_app_and_requirements_match_the_venv() -> None:
    cdk_json = json.loads((INFRA / "cdk.json").read_text())
    assert cdk_json["app"].split()[-1] == "app.py"
    assert cdk_json["context"]["cpuArchitecture"] == "arm64"
    assert cdk_json["context"]["@aws-cdk/core:defaultCrossStackReferences"] == "strong"
    pins = dict(
        line.split("==")
        for line in (INFRA / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert pins == {
        "aws-cdk-lib": metadata.version("aws-cdk-lib"),
        "constructs": metadata.version("constructs"),
    }
