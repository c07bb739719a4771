# Cephalometric landmarks on lateral face photographs: HRNetV2-W18, top-down heatmaps (MMPose).
#
# Read this file as the recipe. `train_cephalometric.py` loads it and fills in what depends on the
# prepared data (number of landmarks, data_root) and on its command-line options; every value here
# can also be changed with `--cfg-options key=value`.
#
# Why this recipe:
# - HRNetV2-W18 keeps a high-resolution branch all the way through, which is what sub-pixel landmark
#   localisation needs, and it is the model of the user's README.
# - Fine-tuned from OpenMMLab's AFLW face-landmark checkpoint (faces, 19 heatmaps): its whole
#   backbone and head load directly, so training starts from face features instead of from noise.
# - No config `import` statements: MMEngine then treats the file as a plain config and applies
#   `custom_imports`, which registers our dataset, metric and hooks (package modules only).
#
# This file is code (MMEngine executes a config), so pass only configs you trust with --config.
# Nothing the tools read besides it ever runs: datasets and checkpoints are read as data.

custom_imports = dict(
    # mmcv_compat must come first: it lets mmpose import on mmcv-lite (no compiled ops).
    imports=['cephalometric.mmpose_plugins.mmcv_compat', 'cephalometric.mmpose_plugins.dataset',
             'cephalometric.mmpose_plugins.metric', 'cephalometric.mmpose_plugins.transforms',
             'cephalometric.training.hooks'],
    allow_failed_imports=False)

default_scope = 'mmpose'

# ----------------------------------------------------------------------------------------------
# Data. Produced by `prepare_cephalometric_data.py`; metainfo.json in data_root names the landmarks.
data_root = 'data/cephalometric/'
# Number of landmarks. train_cephalometric.py sets it from <data_root>/metainfo.json, so another
# landmark set (ISBI 2015, a 38-point set) works without editing this file.
num_keypoints = 19

# ----------------------------------------------------------------------------------------------
# Schedule: 100 epochs as in the user's README; validation (MRE) after every epoch.
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# Adam with a linear warm-up (the pretrained head must not be wrecked by the first large steps)
# and a 10x step decay late in training to settle on sub-pixel positions.
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', begin=0, end=200, start_factor=0.001, by_epoch=False),
    dict(type='MultiStepLR', begin=0, end=100, milestones=[70, 90], gamma=0.1, by_epoch=True),
]
# The learning rate above is for 32 images per step in all. With several processes the batch size is
# per process (the step sees processes x batch_size images); --auto-scale-lr (enable=True) scales
# lr by that total / base_batch_size, the linear scaling rule.
auto_scale_lr = dict(base_batch_size=32, enable=False)

# ----------------------------------------------------------------------------------------------
# Heatmap codec. 256x256 input, 64x64 heatmaps (stride 4) as in the AFLW model. unbiased=True is
# DARK decoding: a Taylor expansion around the heatmap peak gives sub-pixel coordinates, which
# matters at stride 4 (one heatmap pixel is 3.5 px of a 224 px photo).
codec = dict(
    type='MSRAHeatmap', input_size=(256, 256), heatmap_size=(64, 64), sigma=2, unbiased=True)

# ----------------------------------------------------------------------------------------------
# Model
model = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(
        type='PoseDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(
        type='HRNet',
        in_channels=3,
        extra=dict(
            stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK', num_blocks=(4, ),
                        num_channels=(64, )),
            stage2=dict(num_modules=1, num_branches=2, block='BASIC', num_blocks=(4, 4),
                        num_channels=(18, 36)),
            stage3=dict(num_modules=4, num_branches=3, block='BASIC', num_blocks=(4, 4, 4),
                        num_channels=(18, 36, 72)),
            stage4=dict(num_modules=3, num_branches=4, block='BASIC', num_blocks=(4, 4, 4, 4),
                        num_channels=(18, 36, 72, 144), multiscale_output=True),
            upsample=dict(mode='bilinear', align_corners=False)),
        # No ImageNet init: the whole model comes from `load_from` (or random weights with
        # --no-pretrained), and fetching a second checkpoint would break offline machines.
        init_cfg=None),
    # HRNetV2: upsample all four branches and concatenate them (18+36+72+144 = 270 channels).
    neck=dict(type='FeatureMapProcessor', concat=True),
    head=dict(
        type='HeatmapHead',
        in_channels=270,
        out_channels=num_keypoints,
        deconv_out_channels=None,
        conv_out_channels=(270, ),
        conv_kernel_sizes=(1, ),
        loss=dict(type='KeypointMSELoss', use_target_weight=True),
        decoder=codec),
    # All landmarks lie on the facial profile: there are no left/right pairs to swap, and a
    # mirrored profile is a different picture, so flip test would only blur predictions.
    test_cfg=dict(flip_test=False))

# AFLW-pretrained HRNetV2-W18 from OpenMMLab's model zoo (downloaded once, then cached by torch).
load_from = ('https://download.openmmlab.com/mmpose/face/hrnetv2/'
             'hrnetv2_w18_aflw_256x256-f2bbc62b_20210125.pth')
resume = False

# ----------------------------------------------------------------------------------------------
# Pipelines. The photograph is already a face crop: the box is the whole image with a little
# padding so augmentation rarely pushes a landmark out of view.
bbox_padding = 1.1
train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=bbox_padding),
    # Patients sit slightly differently in front of the camera: small shifts, zoom and head tilt.
    # No horizontal flip: every training face looks the same way, and mirroring would make the
    # model spend capacity on a direction it never sees.
    dict(type='RandomBBoxTransform', shift_factor=0.08, shift_prob=0.5, scale_factor=(0.85, 1.15),
         rotate_factor=15, rotate_prob=0.6),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    # Clinic lighting and skin tones vary; geometry does not change with them.
    dict(type='PhotometricDistortion', brightness_delta=24, contrast_range=(0.7, 1.3),
         saturation_range=(0.7, 1.3), hue_delta=8),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs'),
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=bbox_padding),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='PackPoseInputs'),
]

# ----------------------------------------------------------------------------------------------
# Framing model. A clinic's photograph is framed wider than these crops and may show the patient's
# other side, so inference first finds the face (cephalometric/framing.py). That search runs on a
# second copy of the network: once the landmark model has trained, train_cephalometric.py
# fine-tunes a copy of it for `max_epochs` more epochs (its own warm-up and step decay, at the same
# fractions as above; --framing-epochs), with `zoom_out` inserted after LoadImage: half the crops
# are pasted at a random place into a canvas up to 3x their size (plain, gradient or cluttered),
# which becomes the box. Both networks go into best_MRE.pth; the landmark model measures the face
# the framing model found. Why two: one network trained on both kinds of picture measured the
# crops ~15% worse on the demo schedule (README, "Framing robustness").
framing_model = dict(
    max_epochs=30,
    zoom_out=dict(type='RandomZoomOut', prob=0.5, max_ratio=3.0))

dataset_type = 'CephalometricDataset'
train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/train.json',
        data_prefix=dict(img='images/'),
        # None: every training image. N: the first N only, for quick experiments and benchmark.py
        # (--cfg-options train_dataloader.dataset.indices=N).
        indices=None,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    # round_up=False: with several processes each image is validated exactly once (no padding
    # duplicates); the processes' shares may differ by one image.
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/val.json',
        data_prefix=dict(img='images/'),
        test_mode=True,
        pipeline=val_pipeline))
# The test split is only for evaluate.py: it never chooses a checkpoint. evaluate.py does NOT use
# test_dataloader/test_evaluator: it predicts through cephalometric.predictor, the path inference.py
# and users take (the checkpoint alone, no MMPose pipeline), and computes the same statistics
# (cephalometric.metrics), so the reported test figures are those a user gets. Validation during
# training goes through MMPose's pipeline (val_dataloader below); the two routes agree to 0.01 px on
# the same images (tests/test_distributed.py). These two entries remain for MMEngine's Runner.test()
# and MMPose's tools/test.py.
test_dataloader = dict(
    batch_size=32,
    num_workers=2,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/test.json',
        data_prefix=dict(img='images/'),
        test_mode=True,
        pipeline=val_pipeline))

# Mean Radial Error (px of the original image, and mm where the annotations carry pixel spacing),
# SDR at the clinical radii, per-landmark MRE. SDR radii in px are used when no spacing exists.
# collect_device='gpu' is MMEngine's name for gathering the processes' results through the process
# group (all_gather_object); it works with gloo on CPUs too, and unlike 'cpu' it needs no folder
# shared by all nodes (MMEngine's 'cpu' mode writes .dist_test/ into the current directory).
val_evaluator = dict(type='MeanRadialError', sdr_radii_mm=(2.0, 2.5, 3.0, 4.0),
                     sdr_radii_px=(2.0, 4.0, 6.0, 8.0), collect_device='gpu')
test_evaluator = val_evaluator

# ----------------------------------------------------------------------------------------------
# Runtime
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Keep the last two epochs for --resume. The best model by MRE is BestCheckpointHook's job
    # (below): a fixed path, <work_dir>/best_MRE.pth, with only what inference needs.
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='PoseVisualizationHook', enable=False))
custom_hooks = [
    # Several processes: average BatchNorm statistics after each epoch, so every process validates,
    # and rank 0 saves, the same model (no effect with one process).
    dict(type='SyncBuffersHook'),
    dict(type='BestCheckpointHook', metric='MRE'),
    dict(type='TrainingCurveHook'),
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # train_cephalometric.py uses nccl on GPUs and gloo on CPUs; a backend given with
    # --cfg-options env_cfg.dist_cfg.backend=NAME wins.
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='PoseLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True, num_digits=6)
log_level = 'INFO'
# diff_rank_seed: process k of a multi-process run seeds its augmentation with seed + k (its own
# stream); the shuffling of the data is still shared, so the processes split each epoch.
randomness = dict(seed=0, diff_rank_seed=True)
