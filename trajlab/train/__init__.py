"""The train stage: model presets (`models`) and the LightningModule / LightningDataModule (`lit`) that
pretrain and fine-tune them."""
