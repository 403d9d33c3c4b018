"""BaseStack: the network, the edge firewall, the queues and the ECS cluster.

Deployed first, with the deployer's address: `cdk deploy BaseStack --parameters myPublicIP=<ip>/32`.
`AuroraStack` receives this object and uses its attributes (`vpc`, `queue`, `dlq`, `cluster`, `web_acl`).
The references become CloudFormation exports (cdk.json sets `@aws-cdk/core:defaultCrossStackReferences`
to "strong"), so BaseStack cannot be deleted, nor an export changed, while AuroraStack uses it.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, CfnParameter, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

# Named once for devstack, the payment service and AWS (the CDK app runs in the project's venv).
from payments.queues import DLQ_NAME, MAX_RECEIVE_COUNT, QUEUE_NAME

MAX_MESSAGE_BYTES = 262_144  # the relay refuses (dead-letters) larger events itself
LOG_RETENTION = logs.RetentionDays.ONE_MONTH

# An IPv4 CIDR block such as 203.0.113.7/32, prefix length 1..32: a /0 block lets the whole internet in,
# and is accepted only when asked for by name (`cdk deploy -c allowAnyIp=true ...`).
CIDR_PATTERN = r"^(\d{1,3}\.){3}\d{1,3}/([1-9]|[12]\d|3[0-2])$"
ANY_CIDR_PATTERN = r"^(\d{1,3}\.){3}\d{1,3}/(\d|[12]\d|3[0-2])$"
ALLOW_ANY_IP_FLAG = "allowAnyIp"

# Requests per 5 minutes from one address before the rate rule blocks it (context `rateLimit`).
RATE_LIMIT = 1_000
# AWS managed rule groups, in order: OWASP-style common rules, known bad inputs (Log4Shell, ...), SQLi.
MANAGED_RULE_GROUPS = [
    "AWSManagedRulesCommonRuleSet",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesSQLiRuleSet",
]


def context_flag(scope: Construct, name: str) -> bool:
    """A boolean context value (`-c name=true`), refusing anything but true/false."""
    value = scope.node.try_get_context(name)
    if value is None or value is False or value == "false":
        return False
    if value is True or value == "true":
        return True
    raise ValueError(f"context {name} must be true or false, got {value!r}")


def _visibility(metric_name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=metric_name, sampled_requests_enabled=True
    )


class BaseStack(Stack):
    vpc: ec2.Vpc
    queue: sqs.Queue
    dlq: sqs.Queue
    cluster: ecs.Cluster
    web_acl: wafv2.CfnWebACL

    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)

        allow_any_ip = context_flag(self, ALLOW_ANY_IP_FLAG)
        my_public_ip = CfnParameter(
            self,
            "myPublicIP",
            type="String",
            description="The only address the web firewall lets through, as a CIDR block: 203.0.113.7/32",
            allowed_pattern=ANY_CIDR_PATTERN if allow_any_ip else CIDR_PATTERN,
            constraint_description=(
                "an IPv4 CIDR block such as 203.0.113.7/32"
                if allow_any_ip
                else f"an IPv4 CIDR block such as 203.0.113.7/32 (/0 needs -c {ALLOW_ANY_IP_FLAG}=true)"
            ),
        )
        rate_limit = int(self.node.try_get_context("rateLimit") or RATE_LIMIT)

        # --- network: 2 AZs, one NAT gateway (cost), flow logs kept a month ------------------------------
        flow_log_group = logs.LogGroup(
            self, "VpcFlowLogs", retention=LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(
                    name="app", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22
                ),
                ec2.SubnetConfiguration(name="db", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24),
            ],
            flow_logs={
                "FlowLog": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
        )

        # --- WAF: rate limit, AWS managed rules, then only the deployer's address -----------------------
        ip_set = wafv2.CfnIPSet(
            self,
            "AllowedIpSet",
            scope="REGIONAL",
            ip_address_version="IPV4",
            addresses=[my_public_ip.value_as_string],
            description="Deployer address from the myPublicIP parameter",
        )
        # Evaluated in priority order; the first rule that blocks or allows ends the evaluation: floods and
        # malicious requests are blocked even from the allowed address, then only that address gets in.
        rules = [
            wafv2.CfnWebACL.RuleProperty(
                name="RateLimitPerIp",
                priority=0,
                action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                        limit=rate_limit, aggregate_key_type="IP", evaluation_window_sec=300
                    )
                ),
                visibility_config=_visibility("rateLimitPerIp"),
            ),
            *(
                wafv2.CfnWebACL.RuleProperty(
                    name=group,
                    priority=priority,
                    override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                    statement=wafv2.CfnWebACL.StatementProperty(
                        managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                            vendor_name="AWS", name=group
                        )
                    ),
                    visibility_config=_visibility(group),
                )
                for priority, group in enumerate(MANAGED_RULE_GROUPS, start=1)
            ),
            wafv2.CfnWebACL.RuleProperty(
                name="AllowMyPublicIP",
                priority=len(MANAGED_RULE_GROUPS) + 1,
                action=wafv2.CfnWebACL.RuleActionProperty(allow={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    ip_set_reference_statement=wafv2.CfnWebACL.IPSetReferenceStatementProperty(
                        arn=ip_set.attr_arn
                    )
                ),
                visibility_config=_visibility("allowMyPublicIP"),
            ),
        ]
        self.web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(block={}),
            visibility_config=_visibility("flightsWebAcl"),
            rules=rules,
        )

        # --- queues: FIFO, SQS-managed encryption (no KMS key policy to manage), TLS only -----------------
        self.dlq = sqs.Queue(
            self,
            "FlightDLQ",
            queue_name=DLQ_NAME,
            fifo=True,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.queue = sqs.Queue(
            self,
            "FlightQueue",
            queue_name=QUEUE_NAME,
            fifo=True,
            content_based_deduplication=False,  # the relay sets MessageDeduplicationId = event id
            # high-throughput FIFO: ordering and deduplication per message group (= aggregate)
            deduplication_scope=sqs.DeduplicationScope.MESSAGE_GROUP,
            fifo_throughput_limit=sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(30),
            max_message_size_bytes=MAX_MESSAGE_BYTES,
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dlq, max_receive_count=MAX_RECEIVE_COUNT),
        )

        # --- ECS cluster ---------------------------------------------------------------------------------
        self.cluster = ecs.Cluster(
            self, "Cluster", vpc=self.vpc, container_insights_v2=ecs.ContainerInsights.ENABLED
        )

        CfnOutput(self, "QueueUrl", value=self.queue.queue_url, description="flightQueue.fifo")
        CfnOutput(self, "DlqUrl", value=self.dlq.queue_url, description="flightDLQ.fifo")
        CfnOutput(self, "ClusterName", value=self.cluster.cluster_name)
