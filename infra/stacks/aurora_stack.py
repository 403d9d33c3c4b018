"""AuroraStack: the database and the three services (api, relay, payments) running the one image.

- Aurora Serverless v2 PostgreSQL in isolated subnets. The master credentials are generated into Secrets
  Manager and used only by the migration task; each service connects as its own role (txoutbox_api,
  txoutbox_relay, txoutbox_payments) with only the grants it needs (infra/database/service_roles.sql), its
  password generated into that service's own secret: no password appears in the template.
- The migration step is a one-off Fargate task run by a custom resource on every deployment that changes
  it (migrations, then the roles and grants); the services start after it has succeeded.
- Every connection verifies the server (sslmode=verify-full) against the RDS CA bundle, which an init
  container of each task fetches at start (see infra/database/fetch_rds_ca.py for why and how).
- `api` behind a public ALB (HTTPS when context `certificateArn` is given, HTTP then redirects) guarded by
  BaseStack's WAF web ACL; its task role has no AWS permissions at all; /health says ok/degraded only.
- `relay` may only `sqs:SendMessage` to the queue; an ADOT collector beside it scrapes its Prometheus
  metrics over the task's localhost into CloudWatch (namespace txoutbox); it scales out on the backlog.
  `payments` may only receive / delete / change the visibility of the queue's messages, and read the DLQ.
- Alarms (to an SNS topic): oldest waiting event, circuit open, send-side dead letters, DLQ depth, age of
  the oldest queued message.
- Only the three services' and the migration task's security groups reach the database, on 5432.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, CustomResource, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_ecs_patterns as ecs_patterns
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_wafv2 as wafv2
from aws_cdk import custom_resources as cr
from constructs import Construct

from stacks import monitoring
from stacks.base_stack import LOG_RETENTION, BaseStack

# The repository root: the Dockerfile and the project the image is built from.
REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"

# What never goes into the image's build context (the .dockerignore at the root says the same, as an
# allow-list); listed here too so that synthesis stays fast even without the .dockerignore.
ASSET_EXCLUDE = [
    ".git",
    ".venv",
    "node_modules",
    ".txoutbox",
    "cdk.out",
    "build",
    "infra",
    "tests",
    "benchmarks",
    "docs",
    "**/__pycache__",
    "**/*.pyc",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
]

DB_NAME = "outboxPattern"
DB_USER = "dbaadmin"  # the master user: migrations and roles only (the migration task)
DB_PORT = 5432
API_PORT = 8080
RELAY_METRICS_PORT = 9464

# One PostgreSQL role per service; service_roles.sql grants each what it needs, apply_roles.py runs it.
SERVICE_ROLES = {"api": "txoutbox_api", "relay": "txoutbox_relay", "payments": "txoutbox_payments"}
ROLES_SQL = INFRA / "database" / "service_roles.sql"
APPLY_ROLES_PROGRAM = INFRA / "database" / "apply_roles.py"
FETCH_RDS_CA_PROGRAM = INFRA / "database" / "fetch_rds_ca.py"
MIGRATION_RUNNER = INFRA / "migration_runner"

# TLS to the database: libpq verifies the server's certificate chain against the RDS CA bundle and its name
# against PGHOST (the cluster endpoint). The bundle is fetched by the `rds-ca` init container of each task
# into a task volume, created in the image (owned by the app user) at RDS_CA_DIR.
RDS_CA_DIR = "/var/lib/txoutbox/rds-ca"
RDS_CA_FILE = f"{RDS_CA_DIR}/global-bundle.pem"
RDS_CA_BUNDLE_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
PG_SSL_ENV = {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": RDS_CA_FILE}

# /health through the load balancer: ok/degraded only; the reasons stay in `txoutbox status` and the logs.
HEALTH_DETAIL_ENV = {"TXOUTBOX_HEALTH_DETAIL": "never"}

# The base image of real builds, pinned by digest (context `baseImage` overrides it; an unpinned reference
# is refused). `make image` builds from a local Debian rootfs instead (infra/image/build.sh).
DEBIAN_SLIM_DIGEST = "sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251"
DEFAULT_BASE_IMAGE = f"docker.io/library/debian:bookworm-slim@{DEBIAN_SLIM_DIGEST}"
PINNED_IMAGE = re.compile(r"^[\w.\-/:]+@sha256:[0-9a-f]{64}$")
CERTIFICATE_ARN = re.compile(r"^arn:aws[\w-]*:acm:[a-z0-9-]+:\d{12}:certificate/[\w-]+$")

# `cdk deploy -c cpuArchitecture=x86_64 ...` builds and runs an amd64 image instead (no emulation needed
# to build it on an x86 machine); the default is Graviton, like the original.
ARCHITECTURES: dict[str, tuple[ecs.CpuArchitecture, ecr_assets.Platform]] = {
    "arm64": (ecs.CpuArchitecture.ARM64, ecr_assets.Platform.LINUX_ARM64),
    "x86_64": (ecs.CpuArchitecture.X86_64, ecr_assets.Platform.LINUX_AMD64),
}

# The image's ENTRYPOINT is `txoutbox`: each command below is its arguments. The api no longer migrates at
# start-up: its role may not change the schema; the migration task does it.
API_COMMAND = ["api", "--host", "0.0.0.0", "--port", str(API_PORT)]  # noqa: S104 - in a container
RELAY_COMMAND = ["relay"]
PAYMENTS_COMMAND = ["payments"]

RELAY_QUEUE_ACTIONS = ["sqs:SendMessage"]
PAYMENTS_QUEUE_ACTIONS = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",  # the consumer never holds a message longer than the queue's visibility timeout
]
PAYMENTS_DLQ_ACTIONS = ["sqs:ReceiveMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"]

# The relay scales out on the backlog (the largest `txoutbox_backlog` any relay reports: every relay sees
# the same table), one task more from 1,000 waiting events, two more from 10,000; back in below 100.
RELAY_MIN_TASKS = 2
RELAY_MAX_TASKS = 6
RELAY_SCALING_STEPS = [
    {"upper": 100, "change": -1},
    {"lower": 1_000, "change": +1},
    {"lower": 10_000, "change": +2},
]


@dataclass(frozen=True)
class ServiceParts:
    """What one service is made of, for the outputs and the tests."""

    name: str
    task_definition: ecs.FargateTaskDefinition
    container: ecs.ContainerDefinition
    task_role: iam.Role
    security_group: ec2.SecurityGroup
    log_group: logs.LogGroup


class AuroraStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, base: BaseStack, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.base = base
        vpc = base.vpc

        arch_name = str(self.node.try_get_context("cpuArchitecture") or "arm64")
        if arch_name not in ARCHITECTURES:
            raise ValueError(
                f"context cpuArchitecture must be one of {sorted(ARCHITECTURES)}, got {arch_name!r}"
            )
        self.cpu_architecture, platform = ARCHITECTURES[arch_name]
        base_image = str(self.node.try_get_context("baseImage") or DEFAULT_BASE_IMAGE)
        if not PINNED_IMAGE.match(base_image):
            raise ValueError(
                f"context baseImage must be pinned by digest (name@sha256:<64 hex>), got {base_image!r}"
            )
        certificate_arn = self.node.try_get_context("certificateArn")
        if certificate_arn and not CERTIFICATE_ARN.match(str(certificate_arn)):
            raise ValueError(
                f"context certificateArn must be an ACM certificate ARN, got {certificate_arn!r}"
            )
        rds_ca_sha256 = str(self.node.try_get_context("rdsCaBundleSha256") or "")
        if rds_ca_sha256 and not re.fullmatch(r"[0-9a-f]{64}", rds_ca_sha256):
            raise ValueError("context rdsCaBundleSha256 must be 64 lowercase hex digits")
        self.rds_ca_env = {"RDS_CA_BUNDLE_URL": RDS_CA_BUNDLE_URL, "PGSSLROOTCERT": RDS_CA_FILE}
        if rds_ca_sha256:
            self.rds_ca_env["RDS_CA_BUNDLE_SHA256"] = rds_ca_sha256

        # --- database --------------------------------------------------------------------------------
        self.db_security_group = ec2.SecurityGroup(
            self,
            "DatabaseSecurityGroup",
            vpc=vpc,
            description="Aurora PostgreSQL: reachable on 5432 from the txoutbox tasks only",
            allow_all_outbound=False,
        )
        # A generated password, kept in Secrets Manager; the secret also holds `dbname`, and, once attached
        # to the cluster, `host` and `port`. Only the migration task reads it. It outlives the stack, like
        # the final snapshot whose password it holds.
        credentials_secret = rds.DatabaseSecret(self, "DatabaseCredentials", username=DB_USER, dbname=DB_NAME)
        credentials_secret.apply_removal_policy(RemovalPolicy.RETAIN)
        self.database = rds.DatabaseCluster(
            self,
            "Database",
            engine=rds.DatabaseClusterEngine.aurora_postgres(
                version=rds.AuroraPostgresEngineVersion.VER_16_13
            ),
            writer=rds.ClusterInstance.serverless_v2("writer", publicly_accessible=False),
            serverless_v2_min_capacity=0.5,
            serverless_v2_max_capacity=4,
            credentials=rds.Credentials.from_secret(credentials_secret),
            default_database_name=DB_NAME,
            port=DB_PORT,
            parameters={"rds.force_ssl": "1"},
            storage_encrypted=True,
            backup=rds.BackupProps(retention=Duration.days(14)),
            deletion_protection=True,
            removal_policy=RemovalPolicy.SNAPSHOT,
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            security_groups=[self.db_security_group],
        )
        assert self.database.secret is not None  # the secret attached to the cluster
        self.db_secret = self.database.secret
        # One generated secret per service role; attached to the cluster, so it holds host/port/dbname too.
        self.service_secrets: dict[str, secretsmanager.ISecret] = {
            name: rds.DatabaseSecret(
                self, f"{name.capitalize()}DatabaseCredentials", username=role, dbname=DB_NAME
            ).attach(self.database)
            for name, role in SERVICE_ROLES.items()
        }

        # --- the one image -----------------------------------------------------------------------------
        self.image = ecs.ContainerImage.from_asset(
            str(REPO_ROOT),
            file="Dockerfile",
            platform=platform,
            exclude=ASSET_EXCLUDE,
            build_args={"BASE_IMAGE": base_image},
        )

        # --- services ------------------------------------------------------------------------------------
        self.metrics_log_group = logs.LogGroup(
            self, "MetricsLogs", retention=LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY
        )
        self.api = self._service_parts(
            "api",
            command=API_COMMAND,
            cpu=512,
            memory=1024,
            port=API_PORT,
            description="booking API",
            extra_env=HEALTH_DETAIL_ENV,
        )
        self.relay = self._service_parts(
            "relay",
            command=RELAY_COMMAND,
            cpu=512,
            memory=1024,
            # 127.0.0.1 (the relay's default): only the collector beside it, in the same task, scrapes it
            extra_env={"TXOUTBOX_METRICS_PORT": str(RELAY_METRICS_PORT)},
            description="outbox relay",
        )
        self.payments = self._service_parts(
            "payments", command=PAYMENTS_COMMAND, cpu=256, memory=512, description="payment consumer"
        )
        self.metrics_collector = monitoring.add_metrics_collector(
            self,
            self.relay.task_definition,
            scrape_port=RELAY_METRICS_PORT,
            service="relay",
            metrics_log_group=self.metrics_log_group,
            log_group=self.relay.log_group,
        )

        self.relay.task_role.add_to_policy(
            iam.PolicyStatement(
                sid="SendToFlightQueue", actions=RELAY_QUEUE_ACTIONS, resources=[base.queue.queue_arn]
            )
        )
        self.payments.task_role.add_to_policy(
            iam.PolicyStatement(
                sid="ConsumeFlightQueue", actions=PAYMENTS_QUEUE_ACTIONS, resources=[base.queue.queue_arn]
            )
        )
        self.payments.task_role.add_to_policy(
            iam.PolicyStatement(
                sid="InspectFlightDLQ", actions=PAYMENTS_DLQ_ACTIONS, resources=[base.dlq.queue_arn]
            )
        )

        app_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        circuit_breaker = ecs.DeploymentCircuitBreaker(enable=True, rollback=True)

        # --- the migration step: migrations, then the service roles, before any service starts ----------
        self.migration = self._migration_task()
        self.migration_resource = self._migration_resource(app_subnets)

        if certificate_arn:
            listener: dict[str, Any] = {
                "listener_port": 443,
                "protocol": elbv2.ApplicationProtocol.HTTPS,
                "certificate": acm.Certificate.from_certificate_arn(
                    self, "Certificate", str(certificate_arn)
                ),
                "ssl_policy": elbv2.SslPolicy.RECOMMENDED_TLS,
                "redirect_http": True,  # a listener on :80 that only answers 301 to https://
            }
        else:
            listener = {"listener_port": 80}
        self.https = bool(certificate_arn)
        self.api_service = ecs_patterns.ApplicationLoadBalancedFargateService(
            self,
            "Api",
            cluster=base.cluster,
            task_definition=self.api.task_definition,
            desired_count=2,
            public_load_balancer=True,
            open_listener=True,  # the WAF web ACL lets only myPublicIP through
            security_groups=[self.api.security_group],
            task_subnets=app_subnets,
            assign_public_ip=False,
            health_check_grace_period=Duration.seconds(120),
            circuit_breaker=circuit_breaker,
            min_healthy_percent=100,
            max_healthy_percent=200,
            **listener,
        )
        self.api_service.target_group.configure_health_check(
            path="/",
            healthy_http_codes="200",
            interval=Duration.seconds(15),
            healthy_threshold_count=2,
            unhealthy_threshold_count=3,
        )
        self.api_service.target_group.set_attribute("deregistration_delay.timeout_seconds", "30")
        self.api_service.load_balancer.set_attribute(
            "routing.http.drop_invalid_header_fields.enabled", "true"
        )
        scaling = self.api_service.service.auto_scale_task_count(min_capacity=2, max_capacity=6)
        scaling.scale_on_cpu_utilization(
            "CpuScaling",
            target_utilization_percent=45,
            scale_in_cooldown=Duration.seconds(120),
            scale_out_cooldown=Duration.seconds(60),
        )
        wafv2.CfnWebACLAssociation(
            self,
            "WebAclAssociation",
            resource_arn=self.api_service.load_balancer.load_balancer_arn,
            web_acl_arn=base.web_acl.attr_arn,
        )

        self.relay_service = ecs.FargateService(
            self,
            "Relay",
            cluster=base.cluster,
            task_definition=self.relay.task_definition,
            desired_count=RELAY_MIN_TASKS,  # several relays: SKIP LOCKED claims, per-aggregate order kept
            security_groups=[self.relay.security_group],
            vpc_subnets=app_subnets,
            assign_public_ip=False,
            circuit_breaker=circuit_breaker,
            min_healthy_percent=100,
            max_healthy_percent=200,
        )
        self.payments_service = ecs.FargateService(
            self,
            "Payments",
            cluster=base.cluster,
            task_definition=self.payments.task_definition,
            desired_count=1,
            security_groups=[self.payments.security_group],
            vpc_subnets=app_subnets,
            assign_public_ip=False,
            circuit_breaker=circuit_breaker,
            min_healthy_percent=100,
            max_healthy_percent=200,
        )
        # The services need the tables and their roles: CloudFormation runs the migration task first.
        for service in (self.api_service.service, self.relay_service, self.payments_service):
            service.node.add_dependency(self.migration_resource)

        relay_scaling = self.relay_service.auto_scale_task_count(
            min_capacity=RELAY_MIN_TASKS, max_capacity=RELAY_MAX_TASKS
        )
        monitoring.scale_on_backlog(relay_scaling, RELAY_SCALING_STEPS)
        self.alarms = monitoring.Alarms(self, "Alarms", base=base)

        for parts in (self.api, self.relay, self.payments, self.migration):
            self.db_security_group.add_ingress_rule(
                parts.security_group,
                ec2.Port.tcp(DB_PORT),
                f"PostgreSQL from the {parts.name} tasks",
            )

        # --- outputs ---------------------------------------------------------------------------------
        scheme = "https://" if self.https else "http://"
        alb_url = Fn.join("", [scheme, self.api_service.load_balancer.load_balancer_dns_name])
        CfnOutput(self, "AlbUrl", value=alb_url, description="The booking API (only myPublicIP gets through)")
        CfnOutput(self, "SwaggerUrl", value=Fn.join("", [alb_url, "/swagger-ui/index.html"]))
        CfnOutput(self, "QueueUrl", value=base.queue.queue_url)
        CfnOutput(self, "DlqUrl", value=base.dlq.queue_url)
        CfnOutput(
            self,
            "DbSecretArn",
            value=self.db_secret.secret_arn,
            description="master credentials (host/port/dbname/user/password): the migration task's only",
        )
        CfnOutput(self, "DbClusterEndpoint", value=self.database.cluster_endpoint.hostname)
        CfnOutput(self, "DbClusterIdentifier", value=self.database.cluster_identifier)
        CfnOutput(self, "EcsClusterName", value=base.cluster.cluster_name)
        CfnOutput(
            self,
            "ApiTaskDefinitionArn",
            value=self.api.task_definition.task_definition_arn,
            description="one-off CLI tasks as txoutbox_api: aws ecs run-task --overrides (container: api)",
        )
        CfnOutput(
            self,
            "RelayTaskDefinitionArn",
            value=self.relay.task_definition.task_definition_arn,
            description="outbox / dead-letter one-off CLI tasks as txoutbox_relay (container: relay)",
        )
        CfnOutput(
            self,
            "MigrationTaskDefinitionArn",
            value=self.migration.task_definition.task_definition_arn,
            description="admin one-off tasks as the master user (container migrate, command -m txoutbox ...)",
        )
        CfnOutput(self, "AppSubnetIds", value=Fn.join(",", [s.subnet_id for s in vpc.private_subnets]))
        CfnOutput(self, "ApiSecurityGroupId", value=self.api.security_group.security_group_id)
        CfnOutput(self, "RelaySecurityGroupId", value=self.relay.security_group.security_group_id)
        CfnOutput(self, "MigrationSecurityGroupId", value=self.migration.security_group.security_group_id)
        CfnOutput(self, "RelayTaskRoleName", value=self.relay.task_role.role_name)
        CfnOutput(self, "ApiLogGroupName", value=self.api.log_group.log_group_name)
        CfnOutput(self, "RelayLogGroupName", value=self.relay.log_group.log_group_name)
        CfnOutput(self, "PaymentsLogGroupName", value=self.payments.log_group.log_group_name)
        CfnOutput(self, "MigrationLogGroupName", value=self.migration.log_group.log_group_name)
        CfnOutput(
            self, "AlarmTopicArn", value=self.alarms.topic.topic_arn, description="subscribe to the alarms"
        )

    def _task_parts(
        self, name: str, *, cpu: int, memory: int, description: str
    ) -> tuple[ecs.FargateTaskDefinition, iam.Role, logs.LogGroup, ecs.ContainerDefinition]:
        """Task role, task definition with its `rds-ca` init container, and log group of one task family."""
        title = name.capitalize()
        task_role = iam.Role(
            self,
            f"{title}TaskRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description=f"txoutbox {description}: least privilege",
        )
        task_definition = ecs.FargateTaskDefinition(
            self,
            f"{title}TaskDefinition",
            cpu=cpu,
            memory_limit_mib=memory,
            task_role=task_role,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=self.cpu_architecture,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
            volumes=[ecs.Volume(name="rds-ca")],
        )
        log_group = logs.LogGroup(
            self, f"{title}Logs", retention=LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY
        )
        rds_ca = task_definition.add_container(
            "rds-ca",
            image=self.image,
            entry_point=["python", "-c"],
            command=[FETCH_RDS_CA_PROGRAM.read_text()],
            environment=self.rds_ca_env,
            logging=ecs.LogDrivers.aws_logs(stream_prefix="rds-ca", log_group=log_group),
            essential=False,
        )
        rds_ca.add_mount_points(
            ecs.MountPoint(source_volume="rds-ca", container_path=RDS_CA_DIR, read_only=False)
        )
        return task_definition, task_role, log_group, rds_ca

    def _add_main_container(
        self,
        task_definition: ecs.FargateTaskDefinition,
        rds_ca: ecs.ContainerDefinition,
        name: str,
        **options: Any,
    ) -> ecs.ContainerDefinition:
        """The task's essential container: starts once the RDS CA bundle is in place, reads it read-only."""
        container = task_definition.add_container(
            name,
            image=self.image,
            # an init process as PID 1 forwards SIGTERM to txoutbox, which then finishes its work in hand
            linux_parameters=ecs.LinuxParameters(
                self, f"{name.capitalize()}LinuxParameters", init_process_enabled=True
            ),
            stop_timeout=Duration.seconds(30),
            essential=True,
            **options,
        )
        container.add_container_dependencies(
            ecs.ContainerDependency(container=rds_ca, condition=ecs.ContainerDependencyCondition.SUCCESS)
        )
        container.add_mount_points(
            ecs.MountPoint(source_volume="rds-ca", container_path=RDS_CA_DIR, read_only=True)
        )
        return container

    @staticmethod
    def _db_secrets(secret: secretsmanager.ISecret) -> dict[str, ecs.Secret]:
        """libpq's PG* variables from one attached database secret."""
        return {
            "PGHOST": ecs.Secret.from_secrets_manager(secret, "host"),
            "PGPORT": ecs.Secret.from_secrets_manager(secret, "port"),
            "PGDATABASE": ecs.Secret.from_secrets_manager(secret, "dbname"),
            "PGUSER": ecs.Secret.from_secrets_manager(secret, "username"),
            "PGPASSWORD": ecs.Secret.from_secrets_manager(secret, "password"),
        }

    def _security_group(self, name: str, description: str) -> ec2.SecurityGroup:
        return ec2.SecurityGroup(
            self,
            f"{name.capitalize()}SecurityGroup",
            vpc=self.base.vpc,
            description=f"txoutbox {description} tasks",
            allow_all_outbound=True,  # SQS, Secrets Manager, ECR, CloudWatch, the RDS CA bundle via NAT
        )

    def _service_parts(
        self,
        name: str,
        *,
        command: list[str],
        cpu: int,
        memory: int,
        description: str,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> ServiceParts:
        """Task definition, task role, security group and log group of one service."""
        task_definition, task_role, log_group, rds_ca = self._task_parts(
            name, cpu=cpu, memory=memory, description=description
        )
        environment = {
            "SQS_QUEUE_URL": self.base.queue.queue_url,
            "SQS_DLQ_URL": self.base.dlq.queue_url,
            "AWS_REGION": Stack.of(self).region,
            "LOG_FORMAT": "json",
            **PG_SSL_ENV,
            **(extra_env or {}),
        }
        container = self._add_main_container(
            task_definition,
            rds_ca,
            name,
            command=command,
            environment=environment,
            secrets=self._db_secrets(self.service_secrets[name]),  # this service's own role
            logging=ecs.LogDrivers.aws_logs(stream_prefix=name, log_group=log_group),
            port_mappings=[ecs.PortMapping(container_port=port)] if port else None,
        )
        security_group = self._security_group(name, description)
        return ServiceParts(name, task_definition, container, task_role, security_group, log_group)

    def _migration_task(self) -> ServiceParts:
        """The one-off task that applies the migrations and the service roles, as the master user."""
        name = "migrate"
        task_definition, task_role, log_group, rds_ca = self._task_parts(
            name, cpu=256, memory=512, description="migration and admin one-off"
        )
        container = self._add_main_container(
            task_definition,
            rds_ca,
            name,
            # `python -c <apply_roles.py>`; an admin one-off task overrides the command: `-m txoutbox ...`
            entry_point=["python"],
            command=["-c", APPLY_ROLES_PROGRAM.read_text()],
            environment={
                "AWS_REGION": Stack.of(self).region,
                "LOG_FORMAT": "json",
                "TXOUTBOX_ROLES_SQL": ROLES_SQL.read_text(),
                **PG_SSL_ENV,
            },
            secrets={
                **self._db_secrets(self.db_secret),
                **{
                    f"{role.upper()}_PASSWORD": ecs.Secret.from_secrets_manager(
                        self.service_secrets[service], "password"
                    )
                    for service, role in SERVICE_ROLES.items()
                },
            },
            logging=ecs.LogDrivers.aws_logs(stream_prefix=name, log_group=log_group),
        )
        security_group = self._security_group(name, "migration")
        return ServiceParts(name, task_definition, container, task_role, security_group, log_group)

    def _migration_resource(self, subnets: ec2.SubnetSelection) -> CustomResource:
        """Run the migration task on create and on every change of its task definition; wait for exit 0."""
        code = lambda_.Code.from_asset(str(MIGRATION_RUNNER), exclude=["__pycache__", "*.pyc"])
        cluster_arn = self.base.cluster.cluster_arn
        on_event = lambda_.Function(
            self,
            "MigrationStart",
            runtime=lambda_.Runtime.PYTHON_3_12,
            handler="handler.on_event",
            code=code,
            timeout=Duration.minutes(1),
            description="txoutbox: start the migration task",
        )
        on_event.add_to_role_policy(
            iam.PolicyStatement(
                actions=["ecs:RunTask"],
                resources=[self.migration.task_definition.task_definition_arn],
                conditions={"ArnEquals": {"ecs:cluster": cluster_arn}},
            )
        )
        on_event.add_to_role_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[
                    self.migration.task_role.role_arn,
                    self.migration.task_definition.obtain_execution_role().role_arn,
                ],
            )
        )
        is_complete = lambda_.Function(
            self,
            "MigrationWait",
            runtime=lambda_.Runtime.PYTHON_3_12,
            handler="handler.is_complete",
            code=code,
            timeout=Duration.minutes(1),
            description="txoutbox: wait for the migration task to succeed",
        )
        is_complete.add_to_role_policy(
            iam.PolicyStatement(
                actions=["ecs:DescribeTasks"],
                resources=["*"],  # task ARNs are not known in advance
                conditions={"ArnEquals": {"ecs:cluster": cluster_arn}},
            )
        )
        provider = cr.Provider(
            self,
            "MigrationProvider",
            on_event_handler=on_event,
            is_complete_handler=is_complete,
            query_interval=Duration.seconds(15),
            total_timeout=Duration.minutes(30),
        )
        resource = CustomResource(
            self,
            "Migration",
            service_token=provider.service_token,
            resource_type="Custom::TxoutboxMigration",
            properties={
                "Cluster": cluster_arn,
                "TaskDefinitionArn": self.migration.task_definition.task_definition_arn,
                "Subnets": self.base.vpc.select_subnets(subnet_type=subnets.subnet_type).subnet_ids,
                "SecurityGroups": [self.migration.security_group.security_group_id],
            },
        )
        resource.node.add_dependency(self.database)  # the writer instance is up before the task connects
        return resource
