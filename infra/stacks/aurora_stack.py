"""AuroraStack: the database and the three services (api, relay, payments) running the one image.

- Aurora Serverless v2 PostgreSQL in isolated subnets; its credentials are generated into Secrets Manager
  and handed to the tasks as ECS secrets (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD): no password
  appears in the template.
- `api` behind a public ALB guarded by BaseStack's WAF web ACL; it applies the migrations at start-up
  (`--migrate`, under an advisory lock) and its task role has no AWS permissions at all.
- `relay` may only `sqs:SendMessage` to the queue; `payments` may only receive / delete / change the
  visibility of the queue's messages, and read the dead-letter queue.
- Only the three services' security groups reach the database, on 5432.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_ecs_patterns as ecs_patterns
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from stacks.base_stack import LOG_RETENTION, BaseStack

# The repository root: the Dockerfile and the project the image is built from.
REPO_ROOT = Path(__file__).resolve().parents[2]

# What never goes into the image's build context (the .dockerignore at the root says the same, as an
# allow-list); listed here too so that synthesis stays fast even without the .dockerignore.
ASSET_EXCLUDE = [
    ".git",
    ".venv",
    "node_modules",
    ".txoutbox",
    "cdk.out",
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
DB_USER = "dbaadmin"
DB_PORT = 5432
API_PORT = 8080
RELAY_METRICS_PORT = 9464

# `cdk deploy -c cpuArchitecture=x86_64 ...` builds and runs an amd64 image instead (no emulation needed
# to build it on an x86 machine); the default is Graviton, like the original.
ARCHITECTURES: dict[str, tuple[ecs.CpuArchitecture, ecr_assets.Platform]] = {
    "arm64": (ecs.CpuArchitecture.ARM64, ecr_assets.Platform.LINUX_ARM64),
    "x86_64": (ecs.CpuArchitecture.X86_64, ecr_assets.Platform.LINUX_AMD64),
}

# The image's ENTRYPOINT is `txoutbox`: each command below is its arguments.
API_COMMAND = ["api", "--host", "0.0.0.0", "--port", str(API_PORT), "--migrate"]  # noqa: S104 - in a container
RELAY_COMMAND = ["relay"]
PAYMENTS_COMMAND = ["payments"]

RELAY_QUEUE_ACTIONS = ["sqs:SendMessage"]
PAYMENTS_QUEUE_ACTIONS = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]
PAYMENTS_DLQ_ACTIONS = ["sqs:ReceiveMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"]


@dataclass(frozen=True)
class ServiceParts:
    """What one service is made of, for the outputs and the tests."""

    name: str
    task_definition: ecs.FargateTaskDefinition
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

        # --- database --------------------------------------------------------------------------------
        self.db_security_group = ec2.SecurityGroup(
            self,
            "DatabaseSecurityGroup",
            vpc=vpc,
            description="Aurora PostgreSQL: reachable on 5432 from the api, relay and payments tasks only",
            allow_all_outbound=False,
        )
        # A generated password, kept in Secrets Manager; the secret also holds `dbname`, and, once attached
        # to the cluster, `host` and `port`: the tasks read all five as ECS secrets. It outlives the stack,
        # like the final snapshot whose password it holds.
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

        # --- the one image -----------------------------------------------------------------------------
        self.image = ecs.ContainerImage.from_asset(
            str(REPO_ROOT), file="Dockerfile", platform=platform, exclude=ASSET_EXCLUDE
        )

        # --- services ------------------------------------------------------------------------------------
        self.api = self._service_parts(
            "api", command=API_COMMAND, cpu=512, memory=1024, port=API_PORT, description="booking API"
        )
        self.relay = self._service_parts(
            "relay",
            command=RELAY_COMMAND,
            cpu=256,
            memory=512,
            extra_env={"TXOUTBOX_METRICS_PORT": str(RELAY_METRICS_PORT)},
            description="outbox relay",
        )
        self.payments = self._service_parts(
            "payments", command=PAYMENTS_COMMAND, cpu=256, memory=512, description="payment consumer"
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

        self.api_service = ecs_patterns.ApplicationLoadBalancedFargateService(
            self,
            "Api",
            cluster=base.cluster,
            task_definition=self.api.task_definition,
            desired_count=2,
            public_load_balancer=True,
            listener_port=80,
            open_listener=True,  # the WAF web ACL lets only myPublicIP through
            security_groups=[self.api.security_group],
            task_subnets=app_subnets,
            assign_public_ip=False,
            health_check_grace_period=Duration.seconds(120),
            circuit_breaker=circuit_breaker,
            min_healthy_percent=100,
            max_healthy_percent=200,
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
            desired_count=2,  # several relays side by side: SKIP LOCKED claims, per-aggregate order kept
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
        # The api tasks apply the migrations; CloudFormation waits for the api service to be stable
        # before it starts the services that need the tables.
        self.relay_service.node.add_dependency(self.api_service.service)
        self.payments_service.node.add_dependency(self.api_service.service)

        for parts in (self.api, self.relay, self.payments):
            self.db_security_group.add_ingress_rule(
                parts.security_group,
                ec2.Port.tcp(DB_PORT),
                f"PostgreSQL from the {parts.name} tasks",
            )

        # --- outputs ---------------------------------------------------------------------------------
        alb_url = Fn.join("", ["http://", self.api_service.load_balancer.load_balancer_dns_name])
        CfnOutput(self, "AlbUrl", value=alb_url, description="The booking API (only myPublicIP gets through)")
        CfnOutput(self, "SwaggerUrl", value=Fn.join("", [alb_url, "/swagger-ui/index.html"]))
        CfnOutput(self, "QueueUrl", value=base.queue.queue_url)
        CfnOutput(self, "DlqUrl", value=base.dlq.queue_url)
        CfnOutput(
            self, "DbSecretArn", value=self.db_secret.secret_arn, description="host/port/dbname/user/password"
        )
        CfnOutput(self, "DbClusterEndpoint", value=self.database.cluster_endpoint.hostname)
        CfnOutput(self, "DbClusterIdentifier", value=self.database.cluster_identifier)
        CfnOutput(self, "EcsClusterName", value=base.cluster.cluster_name)
        CfnOutput(
            self,
            "ApiTaskDefinitionArn",
            value=self.api.task_definition.task_definition_arn,
            description="for one-off CLI tasks: aws ecs run-task --overrides (container name: api)",
        )
        CfnOutput(self, "AppSubnetIds", value=Fn.join(",", [s.subnet_id for s in vpc.private_subnets]))
        CfnOutput(self, "ApiSecurityGroupId", value=self.api.security_group.security_group_id)
        CfnOutput(self, "RelayTaskRoleName", value=self.relay.task_role.role_name)
        CfnOutput(self, "ApiLogGroupName", value=self.api.log_group.log_group_name)
        CfnOutput(self, "RelayLogGroupName", value=self.relay.log_group.log_group_name)
        CfnOutput(self, "PaymentsLogGroupName", value=self.payments.log_group.log_group_name)

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
        )
        log_group = logs.LogGroup(
            self, f"{title}Logs", retention=LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY
        )
        secret = self.db_secret
        environment = {
            "SQS_QUEUE_URL": self.base.queue.queue_url,
            "SQS_DLQ_URL": self.base.dlq.queue_url,
            "AWS_REGION": Stack.of(self).region,
            "LOG_FORMAT": "json",
            "PGSSLMODE": "require",
            **(extra_env or {}),
        }
        task_definition.add_container(
            name,
            image=self.image,
            command=command,
            environment=environment,
            secrets={
                "PGHOST": ecs.Secret.from_secrets_manager(secret, "host"),
                "PGPORT": ecs.Secret.from_secrets_manager(secret, "port"),
                "PGDATABASE": ecs.Secret.from_secrets_manager(secret, "dbname"),
                "PGUSER": ecs.Secret.from_secrets_manager(secret, "username"),
                "PGPASSWORD": ecs.Secret.from_secrets_manager(secret, "password"),
            },
            logging=ecs.LogDrivers.aws_logs(stream_prefix=name, log_group=log_group),
            port_mappings=[ecs.PortMapping(container_port=port)] if port else None,
            # an init process as PID 1 forwards SIGTERM to txoutbox, which then finishes its work in hand
            linux_parameters=ecs.LinuxParameters(self, f"{title}LinuxParameters", init_process_enabled=True),
            stop_timeout=Duration.seconds(30),
            essential=True,
        )
        security_group = ec2.SecurityGroup(
            self,
            f"{title}SecurityGroup",
            vpc=self.base.vpc,
            description=f"txoutbox {description} tasks",
            allow_all_outbound=True,  # SQS, Secrets Manager, ECR and CloudWatch through the NAT gateway
        )
        return ServiceParts(name, task_definition, task_role, security_group, log_group)
