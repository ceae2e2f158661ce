//! A model saved by a run loads back (`TrainedModel::load`) and answers
//! exactly as the trained one did, for every architecture; a card that
//! does not fit its bytes is refused.

use burn::tensor::Device;
use dpsgd_data::{Scaling, digits};
use dpsgd_train::{
    Activation, ModelKind, Privacy, TrainConfig, TrainError, TrainedModel, card_path, train_model,
};

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dpsgd-model-file-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn should_load_what_it_saved_and_answer_the_same() {
    let (mut tr, mut te) = digits().split(0.2, 0).unwrap();
    tr.apply(&Scaling::Divide(16.0));
    te.apply(&Scaling::Divide(16.0));
    let out = dir("roundtrip");
    for (model, activation, privacy) in [
        (ModelKind::Logreg, Activation::Relu, Privacy::NonPrivate),
        (
            ModelKind::Mlp,
            Activation::Tanh,
            Privacy::TargetEpsilon(3.0),
        ),
        (ModelKind::Cnn, Activation::Relu, Privacy::NonPrivate),
    ] {
        let path = out.join(format!("{model:?}.bin"));
        let cfg = TrainConfig {
            model,
            activation,
            privacy,
            epochs: 1,
            batch_size: 64,
            hidden: vec![16, 8],
            seed: Some(1),
            save_model: Some(path.clone()),
            ..TrainConfig::default()
        };
        let (report, trained) = train_model(&cfg, &tr, &te, &Device::default(), |_| {}).unwrap();
        let (loaded, card) = TrainedModel::load(&path).unwrap();
        assert_eq!(card.privacy.epsilon, report.privacy.epsilon, "{model:?}");
        assert_eq!((card.classes, card.input_len), (10, 64));
        let inputs: Vec<f32> = (0..5).flat_map(|i| te.example(i).to_vec()).collect();
        assert_eq!(
            loaded.logits_of_inputs(&inputs).unwrap(),
            trained.logits_of_inputs(&inputs).unwrap(),
            "{model:?}"
        );
    }
    // A card that says another architecture, or another length: refused.
    let path = out.join("Mlp.bin");
    let card = std::fs::read_to_string(card_path(&path)).unwrap();
    for edited in [
        card.replace("\"hidden\": [\n    16,", "\"hidden\": [\n    17,"),
        card.replace("\"record_bytes\": ", "\"record_bytes\": 1"),
        card.replace("\"record_crc32\": ", "\"record_crc32\": 1"),
        card.replace("\"hidden\": [\n    16,", "\"hidden\": [\n    1000000000,"),
        card.replace("\"input_len\": 64", "\"input_len\": 65"),
        card.replace("dpsgd-model-card/1", "dpsgd-model-card/9"),
    ] {
        assert_ne!(edited, card);
        std::fs::write(card_path(&path), &edited).unwrap();
        let err = TrainedModel::load(&path).unwrap_err();
        assert!(matches!(err, TrainError::Load { .. }), "{err}");
    }
    std::fs::remove_file(card_path(&path)).unwrap();
    assert!(
        TrainedModel::load(&path)
            .unwrap_err()
            .to_string()
            .contains("card")
    );
}
