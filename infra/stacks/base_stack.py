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

QUEUE_NAME = "flightQueue.fifo"
DLQ_NAME = "flightDLQ.fifo"
MAX_RECEIVE_COUNT = 10
MAX_MESSAGE_BYTES = 262_144  # the relay refuses (dead-letters) larger events itself
LOG_RETENTION = logs.RetentionDays.ONE_MONTH

# An IPv4 CIDR block such as 203.0.113.7/32.
CIDR_PATTERN = r"^(\d{1,3}\.){3}\d{1,3}/(\d|[12]\d|3[0-2])$"


class BaseStack(Stack):
    vpc: ec2.Vpc
    queue: sqs.Queue
    dlq: sqs.Queue
    cluster: ecs.Cluster
    web_acl: wafv2.CfnWebACL

    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)

        my_public_ip = CfnParameter(
            self,
            "myPublicIP",
            type="String",
            description="The only address the web firewall lets through, as a CIDR block: 203.0.113.7/32",
            allowed_pattern=CIDR_PATTERN,
            constraint_description="an IPv4 CIDR block such as 203.0.113.7/32",
        )

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

        # --- WAF: block everything but the deployer's address ------------------------------------------
        ip_set = wafv2.CfnIPSet(
            self,
            "AllowedIpSet",
            scope="REGIONAL",
            ip_address_version="IPV4",
            addresses=[my_public_ip.value_as_string],
            description="Deployer address from the myPublicIP parameter",
        )
        self.web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(block={}),
            visibility_config=wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name="flightsWebAcl", sampled_requests_enabled=True
            ),
            rules=[
                wafv2.CfnWebACL.RuleProperty(
                    name="AllowMyPublicIP",
                    priority=0,
                    action=wafv2.CfnWebACL.RuleActionProperty(allow={}),
                    statement=wafv2.CfnWebACL.StatementProperty(
                        ip_set_reference_statement=wafv2.CfnWebACL.IPSetReferenceStatementProperty(
                            arn=ip_set.attr_arn
                        )
                    ),
                    visibility_config=wafv2.CfnWebACL.VisibilityConfigProperty(
                        cloud_watch_metrics_enabled=True,
                        metric_name="allowMyPublicIP",
                        sampled_requests_enabled=True,
                    ),
                )
            ],
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
