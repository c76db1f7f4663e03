"""The agent: runs on every node, follows the controller's snapshot and programs this node."""
